"""Model folders: ``config.yaml`` + ``weights.safetensors`` (+ ``MODEL_CARD.md``). No pickle.

``config.yaml`` holds the architecture (``model:``), the training recipe that produced the
weights (``train:``, so the folder doubles as a ``napari-airm train --config``) and metadata.

The bundled default lives in the repository's ``models/`` (editable install) or inside the
wheel as ``napari_airm/_models`` (``pyproject.toml`` force-includes it).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from .airm import AIRM
from .config import AIRMConfig

FORMAT = "napari-airm-model"
CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "weights.safetensors"
DEFAULT_MODEL = "airm-default"


def bundled_models_dir() -> Path:
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_models", here.parent.parent / "models"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("no bundled models found (looked in napari_airm/_models and ./models)")


def default_model_path() -> Path:
    return bundled_models_dir() / DEFAULT_MODEL


def is_model_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return (p / CONFIG_FILE).is_file() and (p / WEIGHTS_FILE).is_file()


def save_model(model: AIRM, directory: str | os.PathLike, *, half: bool = True,
               train_config: dict[str, Any] | None = None,
               metadata: dict[str, Any] | None = None) -> Path:
    """Write the model folder atomically: files appear only once they are complete."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    config: dict[str, Any] = {"format": FORMAT, "version": 1, "model": model.cfg.to_dict()}
    if train_config is not None:  # the recipe, so the folder doubles as a training config
        config["train"] = {k: v for k, v in train_config.items() if k != "model"}
    config["metadata"] = json.loads(json.dumps(metadata or {}))  # plain types only
    _atomic_write(out / WEIGHTS_FILE, lambda p: save_file(state, str(p)))
    _atomic_write(out / CONFIG_FILE, lambda p: Path(p).write_text(yaml.safe_dump(config, sort_keys=False)))
    return out


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory)
    if not is_model_dir(path):
        raise ValueError(
            f"{path} is not a napari-airm model folder (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        config = yaml.safe_load((path / CONFIG_FILE).read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path / CONFIG_FILE} is not valid YAML: {exc}") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{path / CONFIG_FILE} is not a napari-airm model config")
    return config


def load_model(path: str | os.PathLike | None = None, device: str | torch.device | None = None) -> AIRM:
    """Load a model folder (default: the bundled model), in eval mode, float32."""
    path = default_model_path() if path is None else Path(path)
    config = read_config(path)
    model = AIRM(AIRMConfig.from_dict(config["model"]))
    state = load_file(str(Path(path) / WEIGHTS_FILE))
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights in {path} do not fit its config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    model.source = str(path)
    return model.eval().to(device or "cpu")


def _atomic_write(target: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; model files are meant to be shared
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
