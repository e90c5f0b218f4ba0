"""Resumable training checkpoints without pickle: tensors in safetensors, the rest in JSON.

A checkpoint holds the model, the optimiser moments and the step; data order and per-step
randomness are functions of (seed, step), so nothing else is needed to continue exactly.
Files are replaced atomically: a run killed while writing leaves the previous checkpoint.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

TENSORS = "state.safetensors"
META = "state.json"


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
    tmp_t, tmp_m = directory / (TENSORS + ".part"), directory / (META + ".part")
    save_file(tensors, str(tmp_t))
    tmp_m.write_text(json.dumps(meta))
    os.replace(tmp_t, directory / TENSORS)  # tensors first: META names a complete state
    os.replace(tmp_m, directory / META)


def has_checkpoint(directory: Path) -> bool:
    return (directory / TENSORS).is_file() and (directory / META).is_file()


def load_checkpoint(directory: Path, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    meta = json.loads((directory / META).read_text())
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
