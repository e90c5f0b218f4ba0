"""Refine's cluster run: one big zarr-backed image handed to a dask scheduler (issue 16).

The workers cannot see napari's layers, only files: so the image and the coarse mask are
reopened from the zarr stores the layers were read from (``layer.source.path``), the result
is written by the workers into a new zarr store, and it comes back as a lazy multiscale
Labels layer read from that store. The GUI thread only checks the choices
(``cluster_inputs``, ``check_new_store``); ``run_on_cluster`` does the rest, off it or in a test.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..engine.settings import RefineSettings
from . import _layers as L

LOCAL = "local"


@dataclass
class ClusterRequest:
    """What a cluster run needs: stores the workers can open, and where the result goes."""

    image_path: Path
    mask_path: Path
    out_path: Path
    scheduler: str  # "local" or an address such as tcp://host:8786
    model: Path | None = None  # a folder every worker can read (None: the bundled model)
    device: str | None = None
    settings: RefineSettings = field(default_factory=RefineSettings)
    source_name: str = "coarse"
    source_colormap: Any = None
    layer_kwargs: dict = field(default_factory=dict)


@dataclass
class ClusterResult:
    levels: list  # lazy (dask) views of the output store, full resolution first
    out_path: Path
    seconds: float = 0.0
    load_seconds: float = 0.0


def store_behind(layer, what: str) -> Path:
    """The zarr store on disk that ``layer`` was read from, unchanged since; a LayerError
    telling the user what to do otherwise."""
    from ..io_utils import is_zarr_path

    path = getattr(getattr(layer, "source", None), "path", None)
    if not path or not is_zarr_path(path) or not Path(path).exists():
        raise L.LayerError(f"a scheduler's workers read the {what} from disk, but '{layer.name}' "
                           f"is not backed by a zarr store: save it as .zarr (File ▸ Save) and "
                           f"open that, or clear the scheduler field to refine in this process")
    if getattr(layer, "_undo_history", None):
        raise L.LayerError(f"'{layer.name}' was edited after it was opened from {path}, and the "
                           f"workers would read the store without your edits: save it as a new "
                           f".zarr and open that, or clear the scheduler field")
    return Path(path)


def check_new_store(path) -> Path:
    """Where the workers write the result: a new .zarr in an existing folder. An existing
    store is never replaced from here (the user removes it or picks another name)."""
    from ..io_utils import suffix_of

    text = str(path or "").strip()
    if text in ("", "."):
        raise L.LayerError("a scheduler writes the result into a zarr store: choose an "
                           "'output store' (a new NAME.zarr) in Advanced")
    target = Path(text.rstrip("/\\")).expanduser()
    if suffix_of(target) != ".zarr":
        raise L.LayerError(f"the output store must be a NAME.zarr folder, not '{target.name}'")
    if target.exists():
        raise L.LayerError(f"{target} already exists; napari-airm does not replace it: choose a "
                           f"new name or remove it yourself")
    if not target.parent.is_dir():
        raise L.LayerError(f"the folder {target.parent} for the output store does not exist")
    return target


def run_on_cluster(req: ClusterRequest, report: Callable = lambda d, t, i=None: None,
                   cancelled: Callable[[], bool] = lambda: False) -> ClusterResult:
    """Refine the stores of ``req`` on its scheduler into a new store; returns the store's
    lazy pyramid. A cancelled or failed run leaves the store marked incomplete
    (``engine.distributed.COMPLETE_ATTR`` false)."""
    from .. import api, io_utils
    from ..engine.distributed import COMPLETE_ATTR
    from ..engine.errors import Cancelled
    from ._refine_job import LOADING

    t0 = time.perf_counter()
    report(0, 0, LOADING)
    target = check_new_store(req.out_path)  # again: the name may have been taken meanwhile
    image = io_utils.read_image(req.image_path)
    coarse, kind = io_utils.read_mask(req.mask_path)
    if kind != "binary":
        raise L.LayerError(f"'{req.source_name}' holds several object ids (or probabilities); a "
                           f"scheduler refines a binary mask: clear the scheduler field to refine "
                           f"a label image object by object")
    if tuple(image.shape[:2]) != tuple(coarse.shape):
        raise L.LayerError(f"the mask in {req.mask_path} is {coarse.shape[0]}×{coarse.shape[1]} but "
                           f"the image in {req.image_path} is {image.shape[0]}×{image.shape[1]}")
    t_load = time.perf_counter()
    api.load_model(req.model, device=req.device)  # cached: refine below uses this copy
    load_seconds = time.perf_counter() - t_load
    with reach_scheduler(req.scheduler) as client:  # before the store: a bad address leaves none
        out = io_utils.create_zarr(target, coarse.shape, np.uint8, req.settings.tile)
        out.attrs[COMPLETE_ATTR] = False
        if cancelled():
            raise Cancelled("cancelled")
        api.refine(image, coarse, req.settings, model=req.model, device=req.device, out=out,
                   scheduler=client, progress=lambda d, t: report(d, t), cancel=cancelled)
    return ClusterResult(levels=open_result(target), out_path=target,
                         seconds=time.perf_counter() - t0, load_seconds=load_seconds)


@contextlib.contextmanager
def reach_scheduler(scheduler: str):
    """A client of ``scheduler`` (``engine.distributed.connect``), or a LayerError saying
    that the address is wrong or unreachable."""
    from ..engine.distributed import connect

    try:
        context = connect(scheduler)
        client = context.__enter__()
    except (OSError, ValueError) as exc:
        raise L.LayerError(f"cannot reach the scheduler '{scheduler}' ({exc}): give its address "
                           f"as tcp://HOST:8786, or 'local' for a cluster on this machine") from exc
    with contextlib.ExitStack() as stack:
        stack.push(context.__exit__)
        yield client


def cancelled_text(out_path) -> str:
    """What a cancelled run left at ``out_path``, in one line for the status."""
    import zarr

    from ..engine.distributed import COMPLETE_ATTR

    try:
        complete = zarr.open_array(str(out_path), mode="r").attrs.get(COMPLETE_ATTR)
    except Exception:  # noqa: BLE001 - no store (cancelled before it was made) or not readable
        return "cancelled: no layer was added and no output store was written"
    if complete:
        return f"cancelled: no layer was added; {out_path} was finished and is complete"
    return (f"cancelled: no layer was added; {out_path} is marked incomplete "
            f"(remove it, or choose another output store)")


def open_result(path) -> list:
    """The output store as a pyramid of lazy views (level 0, then strided halves down to
    about 1024 px): napari reads only what it shows."""
    import dask.array as da
    import zarr

    from .._reader import _pyramid

    levels = _pyramid([da.from_zarr(zarr.open_array(str(path), mode="r"))])
    return levels if len(levels) > 1 else levels + [levels[0][::2, ::2]]
