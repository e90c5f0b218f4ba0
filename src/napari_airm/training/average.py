"""Weight averaging of snapshots from one training run (stochastic weight averaging, SWA).

With a constant learning rate the weights keep wandering around a good region; their average
sits nearer its centre than any single snapshot, and generalises better (Izmailov et al.,
2018). Snapshots must share the architecture — in practice, the ``model-stepN`` folders of one
run. BatchNorm running statistics are averaged like the weights (an approximation of SWA's
recomputed statistics that holds for snapshots of one constant-rate run).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..model.io import load_model, read_config, save_model


def average_models(paths: list[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Write the model folder ``out`` whose weights are the mean of the models at ``paths``.

    The config (architecture and recipe) is the last snapshot's; metadata records the sources.
    """
    if len(paths) < 2:
        raise ValueError("averaging needs at least two model folders")
    models = [load_model(p) for p in paths]
    first = models[0].cfg.to_dict()
    for path, model in zip(paths[1:], models[1:]):
        if model.cfg.to_dict() != first:
            raise ValueError(f"{path} has another architecture than {paths[0]}; only snapshots "
                             f"of one model can be averaged")
    states = [m.state_dict() for m in models]
    mean = {}
    for key, value in states[0].items():
        if value.is_floating_point():
            mean[key] = torch.stack([s[key].float() for s in states]).mean(0).to(value.dtype)
        else:  # counters such as BatchNorm's num_batches_tracked: keep the last snapshot's
            mean[key] = states[-1][key]
    result = models[-1]
    result.load_state_dict(mean)
    config = read_config(paths[-1])
    metadata = {"averaged_from": [str(p) for p in paths],
                "last_snapshot_metadata": config.get("metadata", {})}
    train = config.get("train")
    return save_model(result, out, train_config=train, metadata=metadata)
