"""The public surface, CascadePSP-small: ``refine``, ``refine_many``, ``evaluate``, ``train``,
``load_model``. The widgets and the command line call exactly these functions.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .model import AIRM
from .model import load_model as _load_model

_MODEL_CACHE: dict[tuple[str, str], AIRM] = {}


def resolve_device(device: str | None = None):
    """CUDA when present (or asked for), else CPU; a clear error for a device that is absent."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available")
    return dev


def load_model(path: str | os.PathLike | None = None, device: str | None = None) -> AIRM:
    """A model folder (config.yaml + weights.safetensors); default: the bundled model.

    Loaded models are cached per (folder, device), so widgets and scripts can call this freely.
    """
    from .model.io import default_model_path

    dev = resolve_device(device)
    folder = Path(path) if path is not None else default_model_path()
    key = (str(folder.resolve()), str(dev))
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = _load_model(folder, device=dev)
    return _MODEL_CACHE[key]


def _as_model(model: AIRM | str | os.PathLike | None, device) -> AIRM:
    if isinstance(model, AIRM):
        return model.to(device).eval()
    return load_model(model, device=str(device))


def refine(image, coarse, *, model: AIRM | str | os.PathLike | None = None, device: str | None = None,
           out=None, tile: int = 1024, dense: bool = False, labels: str | int | Iterable[int] = "all",
           progress: Callable[[int, int], None] | None = None,
           cancel: Callable[[], bool] | None = None, return_probability: bool = False,
           passes: int = 1, flips: int = 1, snap: bool = False):
    """Refine a coarse mask of an image of any size, tile by tile.

    image: H×W×3 (or H×W grey, H×W×4 RGBA), uint8 / uint16 / float in [0, 1]; numpy, dask or
    zarr. coarse: H×W bool / 0-1 / 0-255 mask, or an integer label image (refined object by
    object, each id written back only where it belongs). Returns a numpy array of coarse's
    kind (bool mask or labels), or fills ``out`` (e.g. a zarr array) tile by tile and returns it.
    ``cancel()`` returning True stops the run with ``engine.Cancelled``; ``out`` is then left
    as it was for every tile not yet written (use a fresh ``out`` to keep user data intact).
    ``passes=2`` refines the result once more (the last stage only, for large images): on
    DUTS val photos +0.3 to +0.9 mBA for twice the final stage's time (docs/performance.md).
    ``flips=2`` or ``4`` averages every stage over mirrored views (left–right; and up–down):
    test-time augmentation, 2× or 4× the time (docs/performance.md, "Flip averaging").
    ``snap=True`` moves each refined boundary that lies within about a pixel of an image edge
    onto it (a colour guided filter of the full-resolution probabilities): +0.5 / +0.6 mBA on
    DUTS val photos; colour ramps (upscaled, blurry images) are left alone; off by default
    (docs/performance.md, "Edge snapping").
    """
    from .engine.refine import refine_array

    dev = resolve_device(device)
    return refine_array(image, coarse, _as_model(model, dev), device=dev, out=out, tile=tile,
                        dense=dense, labels=labels, progress=progress, cancel=cancel,
                        return_probability=return_probability, passes=passes, flips=flips,
                        snap=snap)


def refine_many(pairs, out_dir: str | os.PathLike, *, model: str | os.PathLike | None = None,
                scheduler: str | None = None, tile: int = 1024, dense: bool = False,
                device: str | None = None, passes: int = 1, flips: int = 1,
                snap: bool = False) -> list[Path]:
    """Refine many (image, mask) file pairs as dask.distributed tasks; returns the output files."""
    from .engine.batch import refine_files

    return refine_files(pairs, out_dir, model=model, scheduler=scheduler, tile=tile, dense=dense,
                        device=device, passes=passes, flips=flips, snap=snap)


def evaluate(preds, gts, coarse=None, names: list[str] | None = None) -> dict[str, Any]:
    """IoU (total intersection / total union) and mBA as the field computes them.

    ``preds``/``gts``/``coarse`` are one 2-D mask each or sequences of them. Returns
    ``{"refined": {...}, "coarse": {...} (when given), "gain": {...}, "per_image": [...]}``.
    """
    from .metrics import SegmentationScores

    def listify(x):
        if x is None:
            return None
        if isinstance(x, np.ndarray) and x.ndim == 2:
            return [x]
        return list(x)

    preds_l, gts_l, coarse_l = listify(preds), listify(gts), listify(coarse)
    if len(preds_l) != len(gts_l) or (coarse_l is not None and len(coarse_l) != len(gts_l)):
        raise ValueError(f"got {len(preds_l)} predictions, {len(gts_l)} ground truths"
                         + (f" and {len(coarse_l)} coarse masks" if coarse_l is not None else ""))
    names = names or [str(i) for i in range(len(gts_l))]
    refined = SegmentationScores()
    coarse_scores = SegmentationScores() if coarse_l is not None else None
    per_image = []
    for i, (p, g) in enumerate(zip(preds_l, gts_l)):
        row = {"name": names[i], **{f"refined_{k}": v for k, v in refined.add(p, g, names[i]).items()
                                    if k != "name"}}
        if coarse_scores is not None:
            row.update({f"coarse_{k}": v for k, v in coarse_scores.add(coarse_l[i], g, names[i]).items()
                        if k != "name"})
        per_image.append(row)
    report: dict[str, Any] = {"refined": refined.summary(), "per_image": per_image}
    if coarse_scores is not None:
        report["coarse"] = coarse_scores.summary()
        report["gain"] = {k: report["refined"][k] - report["coarse"][k] for k in ("iou", "mba")}
    return report


def train(config, data, out, **kwargs):
    """Train or fine-tune a model; see ``napari_airm.training.train`` for the options."""
    from .training import train as _train

    return _train(config, data, out, **kwargs)
