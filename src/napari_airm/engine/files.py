"""One image/mask file pair refined into a mask file: what ``napari-airm refine`` does for one
pair and what each ``refine-many`` task does for its pair, so both read, check and write alike.

The output appears under its final name only when complete (``io_utils.atomic_output``). Lazy
inputs (zarr stores, large TIFFs) are read tile by tile; a .zarr output is written tile by tile
and a large TIFF output goes through a disk-backed array, so memory stays flat for huge images.
"""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Callable, Iterable

from .. import io_utils
from ..io_utils import InputFileError
from .settings import RefineSettings

if TYPE_CHECKING:
    from ..model import AIRM


def _ignore(*_) -> None:
    return None


def refine_file(image_path: str | os.PathLike, mask_path: str | os.PathLike,
                output: str | os.PathLike, settings: RefineSettings | str | None = None, *,
                model: AIRM | str | os.PathLike | None = None, device: str | None = None,
                overwrite: bool = False, labels: str | int | Iterable[int] = "all",
                threshold: float | None = None, scheduler=None,
                progress: Callable[[int, int], None] | None = None,
                note: Callable[[str], None] = _ignore, started: float | None = None) -> dict:
    """Refine ``mask_path``'s coarse mask of ``image_path`` into ``output`` (.png, .tif or .zarr).

    An existing ``output`` is refused unless ``overwrite``. ``note(text)`` hears about leftovers
    of an interrupted earlier run that were cleaned up. ``scheduler`` ("local" or an address):
    the tiles run as dask tasks (engine/distributed.py) and the output must be a .zarr.
    Returns a summary whose times count from ``started`` (a ``time.perf_counter()`` value;
    default: this call): ``seconds`` in all, split into ``load_seconds`` (reading, the model)
    and ``refine_seconds`` (refining and writing).
    """
    from ..api import _as_model, as_settings, refine, resolve_device

    started = time.perf_counter() if started is None else started
    for text in io_utils.clean_leftovers(output):
        note(text)
    out_path = io_utils.check_output_path(output, overwrite)
    suffix = io_utils.suffix_of(out_path)
    if scheduler is not None and suffix not in io_utils.ZARR_SUFFIXES:
        raise InputFileError("a scheduler writes a .zarr output (each worker writes its own "
                             f"chunks); {out_path} is not one: give -o NAME.zarr")
    image = io_utils.read_image(image_path)
    coarse, kind = io_utils.read_mask(mask_path, threshold=threshold)
    if tuple(image.shape[:2]) != tuple(coarse.shape):
        raise InputFileError(f"mask {mask_path} is {coarse.shape[0]}x{coarse.shape[1]} but image "
                             f"{image_path} is {image.shape[0]}x{image.shape[1]}; they must be the "
                             "same size")
    if labels != "all" and kind != "labels":
        raise InputFileError(f"labels {labels!r} select ids of a label image, but mask {mask_path} "
                             "is binary")
    h, w = coarse.shape
    out_dtype = io_utils.output_dtype(kind, coarse.dtype)
    settings = as_settings(settings)
    model_folder = model
    model = _as_model(model, resolve_device(device))  # loaded (and cached per process) here
    loaded = time.perf_counter()
    kwargs = dict(settings=settings, model=model, device=device, progress=progress)
    if kind == "labels":
        kwargs["labels"] = labels
    if scheduler is not None:  # the workers load the model folder themselves
        kwargs.update(scheduler=scheduler, model=model_folder)
    with io_utils.atomic_output(out_path, overwrite) as tmp:
        if suffix in io_utils.ZARR_SUFFIXES:
            out = io_utils.create_zarr(tmp, (h, w), out_dtype, settings.tile)
            refine(image, coarse, out=out, **kwargs)
        elif suffix in io_utils.TIFF_SUFFIXES and h * w > io_utils.MEMMAP_PIXELS:
            with io_utils.work_folder(tmp) as folder:
                out = io_utils.create_memmap(folder, (h, w), out_dtype)
                refine(image, coarse, out=out, **kwargs)
                io_utils.write_mask(tmp, out, kind, tile=settings.tile)
                del out
        else:
            io_utils.write_mask(tmp, refine(image, coarse, **kwargs), kind, tile=settings.tile)
    done = time.perf_counter()
    return {"output": str(out_path), "height": h, "width": w, "kind": kind,
            "seconds": done - started, "load_seconds": loaded - started,
            "refine_seconds": done - loaded}
