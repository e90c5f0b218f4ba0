"""The public surface, CascadePSP-small: ``refine``, ``refine_many``, ``evaluate``, ``train``,
``load_model``. The widgets and the command line call exactly these functions.

Torch is imported by the functions that need a model, never at import time: ``evaluate``
(and ``napari-airm evaluate``) needs none, and importing torch costs seconds.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np

from .engine.errors import InputError
from .engine.settings import PRESETS, RefineSettings

if TYPE_CHECKING:  # torch and the network load only when a model is needed
    from .model import AIRM

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
    from .model import load_model as load_model_folder
    from .model.io import default_model_path

    dev = resolve_device(device)
    folder = Path(path) if path is not None else default_model_path()
    key = (str(folder.resolve()), str(dev))
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_model_folder(folder, device=dev)
    return _MODEL_CACHE[key]


def _as_model(model: AIRM | str | os.PathLike | None, device) -> AIRM:
    """The caller's model as it is (the engine works on its own copy, so a failing call never
    moves or changes it), or a model folder loaded (and cached) for ``device``."""
    from .model import AIRM

    if isinstance(model, AIRM):
        return model
    return load_model(model, device=str(device))


def refine(image, coarse, settings: RefineSettings | str | None = None, *,
           model: AIRM | str | os.PathLike | None = None, device: str | None = None, out=None,
           labels: str | int | Iterable[int] = "all",
           progress: Callable[[int, int], None] | None = None,
           cancel: Callable[[], bool] | None = None, scheduler=None, **options):
    """Refine a coarse mask of an image of any size, tile by tile.

    image: H×W×3 (or H×W grey, H×W×4 RGBA), uint8 / uint16 / float in [0, 1]; numpy, dask or
    zarr. coarse: H×W bool / 0-1 / 0-255 mask, or an integer label image (refined object by
    object, each id written back only where it belongs). Returns a numpy array of coarse's
    kind (bool mask or labels), or fills ``out`` (e.g. a zarr array) tile by tile and returns it.

    ``settings``: a ``RefineSettings`` or a preset name (``"default"``; ``"network"`` = the
    network alone, without trust region or boundary solve); keyword ``options`` change single
    fields, e.g. ``refine(img, mask, reach=20)``. The defaults: the boundary moves at most
    ``reach`` from the given one (``"auto"``: a share of the image size, never more than half
    the local thickness of an object or gap; outside it the given mask stands exactly), and the
    final boundary is a full-resolution graph cut (``solve``). See ``RefineSettings`` for
    ``tile``, ``passes``, ``flips``, ``dense`` and the rest, and docs/performance.md for what
    each costs and gains.
    ``cancel()`` returning True stops the run with ``engine.Cancelled``; ``out`` is then left
    as it was for every tile not yet written (use a fresh ``out`` to keep user data intact).

    ``scheduler``: run the tiles of this one image as dask.distributed tasks — ``"local"`` (a
    LocalCluster for this call), a scheduler address or a ``Client``. ``out`` must then be a
    zarr array every worker can open; its attribute ``napari_airm_complete`` is true only once
    every tile is written. ``model`` should be a folder the workers can read (or None for the
    bundled model); a model object is sent to them instead. See ``engine/distributed.py``.
    """
    from .engine.refine import refine_array

    dev = resolve_device(device)
    if scheduler is not None:
        from .engine.distributed import refine_on_cluster
        from .model import AIRM
        from .model.io import default_model_path

        model_ref = model if isinstance(model, AIRM) else Path(model or default_model_path()).resolve()
        return refine_on_cluster(image, coarse, _as_model(model, dev), model_ref=model_ref,
                                 device=dev, out=out, scheduler=scheduler,
                                 settings=as_settings(settings).replace(**options),
                                 progress=progress, cancel=cancel)
    return refine_array(image, coarse, _as_model(model, dev), device=dev,
                        settings=as_settings(settings), out=out, labels=labels, progress=progress,
                        cancel=cancel, **options)


def as_settings(settings: RefineSettings | str | None) -> RefineSettings:
    """A ``RefineSettings`` from None (the default), a preset name or itself."""
    if settings is None or isinstance(settings, RefineSettings):
        return settings or RefineSettings()
    if isinstance(settings, str) and settings in PRESETS:
        return PRESETS[settings]
    raise InputError(f"settings must be a RefineSettings or one of {sorted(PRESETS)}, not {settings!r}")


def refine_many(pairs, out_dir: str | os.PathLike, settings: RefineSettings | str | None = None, *,
                model: str | os.PathLike | None = None, scheduler: str | None = None,
                device: str | None = None, overwrite: bool = False, **options) -> list[Path]:
    """Refine many (image, mask) file pairs as dask.distributed tasks; returns the output files.
    Existing outputs are refused unless ``overwrite`` (each is replaced atomically)."""
    from .engine.batch import refine_files

    return refine_files(pairs, out_dir, model=model, scheduler=scheduler, device=device,
                        overwrite=overwrite, settings=as_settings(settings).replace(**options))


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
    if not gts_l and not preds_l:
        raise ValueError("nothing to evaluate: no predictions and no ground truths were given")
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
