"""Model folders: ``config.yaml`` + ``weights.safetensors`` (+ ``MODEL_CARD.md``). No pickle.

``config.yaml`` holds the architecture (``model:``), the training recipe that produced the
weights (``train:``, so the folder doubles as a ``napari-airm train --config``) and metadata.

A folder is checked when it is loaded: a known format version, an architecture that builds,
weights that fit it tensor by tensor, and every weight finite. Anything else is refused with
one ``ModelFileError`` line that names the file.

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
#: Format versions this code reads (``version:`` in config.yaml); a later one is refused.
KNOWN_VERSIONS = (1,)
FORMAT_VERSION = 1
CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "weights.safetensors"
DEFAULT_MODEL = "airm-default"


class ModelFileError(ValueError):
    """A model folder that cannot be used; the message names the file and the problem."""


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
    config: dict[str, Any] = {"format": FORMAT, "version": FORMAT_VERSION,
                              "model": model.cfg.to_dict()}
    if train_config is not None:  # the recipe, so the folder doubles as a training config
        config["train"] = {k: v for k, v in train_config.items() if k != "model"}
    config["metadata"] = json.loads(json.dumps(metadata or {}))  # plain types only
    _atomic_write(out / WEIGHTS_FILE, lambda p: save_file(state, str(p)))
    _atomic_write(out / CONFIG_FILE, lambda p: Path(p).write_text(yaml.safe_dump(config, sort_keys=False)))
    return out


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The folder's config.yaml, checked: our format, a version this code reads, a ``model:``
    mapping."""
    path = Path(directory)
    if not is_model_dir(path):
        raise ModelFileError(
            f"{path} is not a napari-airm model folder (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    file = path / CONFIG_FILE
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFileError(f"{file} is not a text (UTF-8) file, so not a napari-airm model "
                             f"config") from None
    except OSError as exc:
        raise ModelFileError(f"cannot read {file}: {exc}") from exc
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ModelFileError(f"{file} is not valid YAML: {exc}") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFileError(f"{file} is not a napari-airm model config (no 'format: {FORMAT}')")
    version = config.get("version")
    if isinstance(version, bool) or version not in KNOWN_VERSIONS:
        raise ModelFileError(f"{file} has format version {version!r}; this napari-airm reads "
                             f"version {', '.join(map(str, KNOWN_VERSIONS))} (a newer napari-airm "
                             f"may read it)")
    if not isinstance(config.get("model"), dict):
        raise ModelFileError(f"{file} has no 'model:' section (the architecture), so the weights "
                             f"cannot be built")
    return config


def _describe_shape(shape) -> str:
    return "×".join(map(str, shape)) or "scalar"


def _check_names(file: Path, missing, unexpected) -> None:
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} not in the architecture (first: "
                         f"{', '.join(unexpected[:3])})")
        raise ModelFileError(f"weights in {file} do not fit its {CONFIG_FILE}: tensors "
                             + "; ".join(parts))


def _check_weights(file: Path, state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> None:
    """Weights of the architecture's shapes (where the names agree), all finite; names are
    checked by ``load_state_dict`` (which knows the aliases old files carry)."""
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise ModelFileError(f"weights in {file} do not fit its {CONFIG_FILE}: {len(wrong)} tensor(s) "
                             f"of another shape (first: {k} is {_describe_shape(state[k].shape)} "
                             f"in the file, {_describe_shape(own[k].shape)} in the architecture)")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ModelFileError(f"weights in {file} are damaged: {len(bad)} tensor(s) hold NaN or "
                             f"infinite values (first: {bad[0]})")


def load_model(path: str | os.PathLike | None = None, device: str | torch.device | None = None) -> AIRM:
    """Load a model folder (default: the bundled model), in eval mode, float32."""
    path = default_model_path() if path is None else Path(path)
    config = read_config(path)
    try:
        model = AIRM(AIRMConfig.from_dict(config["model"]))
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{path / CONFIG_FILE}: the 'model:' section does not describe an "
                             f"architecture: {exc}") from exc
    file = Path(path) / WEIGHTS_FILE
    try:
        state = load_file(str(file))
    except Exception as exc:  # safetensors raises its own error type for a damaged file
        raise ModelFileError(f"cannot read the weights {file}: {exc}") from exc
    own = model.state_dict()
    _check_weights(file, state, own)
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    _check_names(file, missing, unexpected)
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
