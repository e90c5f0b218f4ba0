"""Lazy, validated access to the user's image and mask (numpy, dask, zarr, any array-like).

Nothing here materialises a whole array: ``read_*`` take a box in full-resolution pixels and
return only that window, padded by edge replication where the box leaves the image (the
engine's stage grids extend to a whole number of coarse pixels).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open), full-resolution pixels


def _shape_dtype(arr, name: str):
    shape = getattr(arr, "shape", None)
    dtype = getattr(arr, "dtype", None)
    if shape is None or dtype is None:
        arr = np.asarray(arr)
        shape, dtype = arr.shape, arr.dtype
    return arr, tuple(int(s) for s in shape), np.dtype(dtype)


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
        else:
            raise InputError(f"image must be H×W, H×W×3 or H×W×4; got shape {shape}"
                             + (" (3-D stacks: refine one plane at a time)" if len(shape) >= 3 else ""))
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
    window = np.asarray(array[cy0:cy1, cx0:cx1])
    pad = ((cy0 - y0, y1 - cy1), (cx0 - x0, x1 - cx1)) + ((0, 0),) * (window.ndim - 2)
    if any(p for pair in pad for p in pair):
        window = np.pad(window, pad, mode="edge")
    return window
