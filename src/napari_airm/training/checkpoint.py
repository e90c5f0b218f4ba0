"""Resumable training checkpoints without pickle: tensors in safetensors, the rest in JSON.

A checkpoint holds the model, the optimiser moments and the step; data order and per-step
randomness are functions of (seed, step), so nothing else is needed to continue exactly.
It is one file: the step and the optimiser's settings travel in the safetensors header's
metadata, and the file is replaced with one rename, so a run killed at any moment leaves either
the previous checkpoint or the new one, never tensors of one step with the metadata of another.
(Checkpoints of older versions, with a separate ``state.json``, still load.)
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

TENSORS = "state.safetensors"
META = "state.json"  # older checkpoints only: the metadata beside the tensors
META_KEY = "napari_airm.checkpoint"  # the metadata, as JSON, in the safetensors header


def save_checkpoint(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    step: int, extra: dict[str, Any] | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_state = optimizer.state_dict()
    for pid, state in opt_state["state"].items():
        for key, value in state.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"opt/{pid}/{key}"] = t.detach().cpu().contiguous()
    meta = {"step": step, "param_groups": opt_state["param_groups"], "extra": extra or {}}
    tmp = directory / (TENSORS + ".part")
    save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
    os.replace(tmp, directory / TENSORS)  # the one step that makes the new checkpoint current
    stale = directory / META
    if stale.exists():  # an older version's metadata file no longer describes these tensors
        stale.unlink()


def has_checkpoint(directory: Path) -> bool:
    return (directory / TENSORS).is_file()


def read_checkpoint_meta(directory: Path) -> dict[str, Any]:
    """The step, optimiser settings and extras of the checkpoint in ``directory``."""
    path = directory / TENSORS
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for broken files
        raise ValueError(f"checkpoint {path} cannot be read ({exc}); it is damaged") from exc
    text = header.get(META_KEY)
    source = path
    if text is None:  # written before the metadata moved into the tensor file
        source = directory / META
        if not source.is_file():
            raise ValueError(f"checkpoint {path} has no step metadata and there is no {META}")
        text = source.read_text()
    try:
        meta = json.loads(text)
        int(meta["step"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"checkpoint metadata in {source} is damaged ({exc})") from exc
    return meta


def load_checkpoint(directory: Path, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    meta = read_checkpoint_meta(directory)
    tensors = load_file(str(directory / TENSORS))
    model.load_state_dict({k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")})
    if optimizer is not None:
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("opt/"):
                _, pid, name = key.split("/", 2)
                state.setdefault(int(pid), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta
