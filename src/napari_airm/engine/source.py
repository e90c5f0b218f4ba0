"""Lazy, validated access to the user's image and mask (numpy, dask, zarr, any array-like).

Nothing here materialises a whole array: ``read_*`` take a box in full-resolution pixels and
return only that window, padded by edge replication where the box leaves the image (the
engine's stage grids extend to a whole number of coarse pixels).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .errors import InputError

Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open), full-resolution pixels


def _shape_dtype(arr, name: str):
    """``(array, shape, numpy dtype)`` of any array-like; a clear InputError for what is not one
    (a file name, a torch tensor is converted to numpy on the CPU)."""
    if isinstance(arr, (str, bytes, os.PathLike)):
        raise InputError(f"{name} must be an array, not the path {os.fsdecode(arr)!r}; read the "
                         f"file first (napari_airm.io_utils.read_{'image' if name == 'image' else 'mask'})")
    if type(arr).__module__.startswith("torch") and hasattr(arr, "detach"):
        import torch

        t = arr.detach().cpu()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.float()
        arr = t.numpy()
    shape = getattr(arr, "shape", None)
    dtype = getattr(arr, "dtype", None)
    if shape is None or dtype is None:
        arr = np.asarray(arr)
        shape, dtype = arr.shape, arr.dtype
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise InputError(f"{name} has dtype {dtype}, which is not a numpy dtype; give a numpy, "
                         f"dask or zarr array") from None
    return arr, tuple(int(s) for s in shape), dtype


@dataclass
class ImageSource:
    """An H×W (grey), H×W×3 (RGB) or H×W×4 (RGBA, alpha ignored) image of any array type."""

    array: object
    height: int
    width: int
    channels: int
    dtype: np.dtype

    @classmethod
    def wrap(cls, image) -> "ImageSource":
        arr, shape, dtype = _shape_dtype(image, "image")
        if len(shape) == 2:
            channels = 1
        elif len(shape) == 3 and shape[2] in (1, 3, 4):
            channels = shape[2]
        elif len(shape) == 3 and shape[2] == 2:
            raise InputError(f"image has 2 channels (shape {shape}); give grey (H×W), RGB (H×W×3) "
                             f"or RGBA (H×W×4)")
        elif len(shape) == 3 and shape[0] in (1, 3, 4):
            raise InputError(f"image has shape {shape}: channel-first (C×H×W) or a stack of "
                             f"{shape[0]} planes; give H×W×C (e.g. image.transpose(1, 2, 0)) or "
                             f"one plane (image[k])")
        else:
            raise InputError(f"image must be H×W, H×W×3 or H×W×4; got shape {shape}"
                             + (" (a stack of planes: refine one plane at a time)"
                                if len(shape) >= 3 else ""))
        if not (dtype == np.uint8 or dtype == np.uint16 or np.issubdtype(dtype, np.floating)):
            raise InputError(f"image dtype {dtype} is not supported; use uint8, uint16 or float in [0, 1]")
        if shape[0] < 8 or shape[1] < 8:
            raise InputError(f"image is too small ({shape[0]}×{shape[1]}); it needs at least 8×8 pixels")
        return cls(arr, shape[0], shape[1], channels, dtype)

    def read(self, box: Box) -> np.ndarray:
        """RGB float32 in [0, 1], shape (y1-y0, x1-x0, 3), edge-padded outside the image."""
        window = _read_padded(self.array, box, self.height, self.width)
        if window.ndim == 2:
            window = window[..., None]
        window = window[..., :3] if window.shape[2] >= 3 else np.repeat(window[..., :1], 3, axis=2)
        if self.dtype == np.uint8:
            out = window.astype(np.float32) / 255.0
        elif self.dtype == np.uint16:
            out = window.astype(np.float32) / 65535.0
        else:
            out = window.astype(np.float32)
            if not np.isfinite(out).all():
                raise InputError("image contains NaN or infinite values")
            if out.max(initial=0) > 1.0 + 1e-3 or out.min(initial=0) < -1e-3:
                raise InputError("float images must hold values in [0, 1]; divide by 255 (or the "
                                 "maximum) first")
        return out


@dataclass
class MaskSource:
    """An H×W coarse mask: bool, 0/1, 0/255, probabilities in [0, 1], or integer labels."""

    array: object
    height: int
    width: int
    dtype: np.dtype

    @classmethod
    def wrap(cls, mask) -> "MaskSource":
        arr, shape, dtype = _shape_dtype(mask, "mask")
        if len(shape) != 2:
            raise InputError(f"coarse mask must be a 2-D H×W array; got shape {shape}")
        if not (dtype == bool or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
            raise InputError(f"coarse mask dtype {dtype} is not supported; use bool, integers or float")
        return cls(arr, shape[0], shape[1], dtype)

    def read(self, box: Box) -> np.ndarray:
        return _read_padded(self.array, box, self.height, self.width)


def _read_padded(array, box: Box, height: int, width: int) -> np.ndarray:
    y0, y1, x0, x1 = box
    cy0, cy1 = max(y0, 0), min(y1, height)
    cx0, cx1 = max(x0, 0), min(x1, width)
    if cy0 >= cy1 or cx0 >= cx1:
        raise ValueError(f"box {box} lies outside the {height}×{width} array")
    try:
        window = np.asarray(array[cy0:cy1, cx0:cx1])
    except (InputError, MemoryError):
        raise
    except Exception as exc:  # a damaged chunk, a vanished file: say where, not how
        settle_async_reads()
        raise InputError(f"cannot read rows {cy0}..{cy1}, columns {cx0}..{cx1} of "
                         f"{describe(array)}: {type(exc).__name__}: {exc}") from exc
    pad = ((cy0 - y0, y1 - cy1), (cx0 - x0, x1 - cx1)) + ((0, 0),) * (window.ndim - 2)
    if any(p for pair in pad for p in pair):
        window = np.pad(window, pad, mode="edge")
    return window


def describe(array) -> str:
    """A short name for an array in messages: the zarr store it lives in, when it has one."""
    store_path = getattr(array, "store_path", None)
    if store_path is not None:
        return f"the zarr array at {store_path}"
    return f"the {type(array).__module__.split('.')[0]} {type(array).__name__}"


def settle_async_reads(timeout: float = 10.0) -> None:
    """After a failed zarr read, let the reads of the other chunks of that request finish.

    zarr (v3) reads the chunks of one request as concurrent tasks on its own event loop and
    raises on the first failure while the others still run; left so, they are destroyed at
    exit with "Task was destroyed but it is pending!" and "Task exception was never
    retrieved" tracebacks. Waiting for them here (and collecting their errors) keeps a damaged
    chunk to the one clear line about it.
    """
    try:
        import asyncio

        from zarr.core import sync as zsync
    except ImportError:  # zarr 2, or no zarr: nothing runs in the background
        return
    if getattr(zsync, "loop", [None])[0] is None:
        return

    async def wait_for_the_rest() -> None:
        me = asyncio.current_task()
        others = [t for t in asyncio.all_tasks() if t is not me]
        if others:
            await asyncio.wait(others, timeout=timeout)
        for t in others:
            if t.done() and not t.cancelled():
                t.exception()  # mark it retrieved: the first failure is the one reported

    try:
        zsync.sync(wait_for_the_rest(), timeout=timeout + 1)
    except Exception:  # best effort: the error being reported matters more
        pass
