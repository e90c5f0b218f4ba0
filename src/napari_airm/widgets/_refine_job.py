"""The Refine widget's worker: a request built on the GUI thread, ``run_refine`` (off it, or
synchronously in scripts and benchmarks) calling ``napari_airm.api.refine``, and its result.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..engine.settings import RefineSettings
from . import _layers as L

NEW, IN_PLACE = "new layer", "in place"
LOADING = "loading the model"


TILES, OBJECTS = "tiles", "objects"


def describe_progress(done: int, total: int, unit: object = TILES) -> str:
    """The engine's progress in its unit: tiles for a mask; for a label image (``OBJECTS``)
    the engine counts objects in thousandths (``engine.labels``), shown as the object being
    refined."""
    if total <= 0:
        return f"{LOADING}…"
    if unit == OBJECTS:
        n = max(1, total // 1000)
        return f"object {min(n, done // 1000 + 1)} of {n} ({100 * done / total:.0f}%)"
    return f"tile {done} of {total}"


def progress_unit(coarse, tile: int) -> str:
    """What the engine will count for this coarse mask: the objects of a label image, else
    tiles (the engine's own scan decides, so the two never disagree)."""
    from ..engine.labels import scan_mask
    from ..engine.source import MaskSource

    return OBJECTS if scan_mask(MaskSource.wrap(coarse), tile).kind == "labels" else TILES


@dataclass
class RefineRequest:
    """Everything the worker needs; built on the GUI thread by ``RefineWidget.make_request``."""

    image: Any
    coarse: Any = None  # array, or None when ``make_coarse`` rasterises shapes in the worker
    make_coarse: Callable[[], np.ndarray] | None = None
    labels: Any = "all"
    model: Path | None = None
    device: str | None = None
    settings: RefineSettings = field(default_factory=RefineSettings)
    mode: str = NEW
    dtype: Any = np.uint8
    snapshot: np.ndarray | None = None  # in place: the layer's data when the run started
    target: Any = None  # the Labels layer to edit in place
    source_name: str = "coarse"
    source_colormap: Any = None  # the coarse Labels layer's colours (the result must differ)
    layer_kwargs: dict = field(default_factory=dict)


@dataclass
class RefineResult:
    labels: np.ndarray | None = None  # new layer
    indices: tuple | None = None  # in place: changed pixels ...
    values: np.ndarray | None = None  # ... and their new values
    seconds: float = 0.0  # in the worker: model loading + refinement
    load_seconds: float = 0.0  # of which loading the model (PyTorch's import on the first run)


def _label_values(result: np.ndarray, coarse, labels, dtype) -> np.ndarray:
    """The engine's output as a label image of ``dtype`` (bool masks get the object's id)."""
    if result.dtype != bool:
        return result.astype(dtype, copy=False)
    if labels == "all":
        value = max(1, L.max_value(coarse))
        out = result.astype(dtype)
        return out * dtype(value) if value != 1 else out
    ids = [labels] if np.isscalar(labels) else list(labels)
    out = np.array(coarse, dtype=dtype)  # keep the other objects as they are
    out[np.isin(out, ids) & ~result] = 0
    out[result & ~np.isin(out, ids)] = ids[0]
    return out


def run_refine(req: RefineRequest, report: Callable = lambda d, t, i=None: None,
               cancelled: Callable[[], bool] = lambda: False) -> RefineResult:
    """The worker: checks, the model (loaded and cached; the first load imports PyTorch, seconds
    that ``report(0, 0)`` shows as a busy bar), ``api.refine``, then the new layer data or the
    in-place diff."""
    from ..engine.errors import Cancelled

    t0 = time.perf_counter()
    report(0, 0, LOADING)
    coarse = req.coarse if req.coarse is not None else req.make_coarse()
    ids = [] if req.labels == "all" else [req.labels] if np.isscalar(req.labels) else list(req.labels)
    if not ids and not L.any_nonzero(coarse):
        raise L.LayerError(f"the coarse mask '{req.source_name}' is empty: draw or import a rough "
                           f"mask of the object first")
    for i in ids:
        if not L.any_nonzero(coarse, i):
            raise L.LayerError(f"label {i} does not occur in '{req.source_name}': pick an id that is "
                               f"painted (or choose 'all ids')")
    labels = ids[0] if len(ids) == 1 else (ids or "all")
    unit = progress_unit(coarse, req.settings.tile)
    t_load = time.perf_counter()
    from .. import api

    model = api.load_model(req.model, device=req.device)
    load_seconds = time.perf_counter() - t_load
    if cancelled():
        raise Cancelled("cancelled")
    result = api.refine(req.image, coarse, req.settings, model=model, device=req.device,
                        labels=labels,
                        progress=lambda d, t: report(d, t, unit),
                        cancel=cancelled)
    if cancelled():
        raise Cancelled("cancelled")
    out = _label_values(np.asarray(result), coarse, labels, np.dtype(req.dtype).type)
    if req.mode == IN_PLACE:
        changed = np.nonzero(out != req.snapshot)
        return RefineResult(indices=changed, values=out[changed], seconds=time.perf_counter() - t0,
                            load_seconds=load_seconds)
    return RefineResult(labels=out, seconds=time.perf_counter() - t0, load_seconds=load_seconds)
