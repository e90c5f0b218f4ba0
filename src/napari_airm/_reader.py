"""Reader for image/mask zarr stores, opened lazily as multiscale (pyramid) layers.

Layout (``write_zarr_sample`` writes it)::

    NAME.zarr/
      image/            H×W×3 (or H×W) array, or a group of levels "0", "1", … (each ½ the last)
      mask/ | labels/   optional H×W integer array, or a group of levels

Large images (or stores that hold levels) open as a multiscale layer: the stored levels, or
strided views of level 0 made lazily with dask, down to about 1024 px, so nothing loads whole.
Masks that fit comfortably in memory open as a plain (paintable) Labels layer; larger ones as
lazy multiscale Labels (refine them into a new layer).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

MULTISCALE_ABOVE = 4096  # image side (px) above which a single-level store opens as a pyramid
LABELS_IN_MEMORY = 1 << 26  # mask pixels up to which the mask loads as a plain Labels layer
SMALLEST_LEVEL = 1024
IMAGE_KEYS, MASK_KEYS = ("image",), ("mask", "labels")


def _open_group(path):
    import zarr

    try:
        return zarr.open_group(str(path), mode="r")
    except Exception:  # noqa: BLE001 - not a zarr group: not ours
        return None


def _find(group, keys):
    for key in keys:
        if key in group:
            return group[key]
    return None


def _levels(node) -> list:
    """The stored levels of an array or a group of arrays named 0, 1, … (as dask arrays)."""
    import dask.array as da
    import zarr

    if isinstance(node, zarr.Group):
        names = sorted((k for k in node.array_keys() if k.isdigit()), key=int)
        if not names:
            raise ValueError(f"zarr group {node.path!r} has no levels named 0, 1, …")
        return [da.from_zarr(node[k]) for k in names]
    return [da.from_zarr(node)]


def _pyramid(levels: list) -> list:
    """Add strided (lazy, nearest) views of the last level until the smallest side ≤ 1024."""
    levels = list(levels)
    while max(levels[-1].shape[:2]) > SMALLEST_LEVEL:
        levels.append(levels[-1][::2, ::2])
    return levels


def zarr_get_reader(path):
    """npe2 reader hook: a reader for our zarr layout, or None so other readers can try."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(str(path))
    if p.suffix.lower() != ".zarr" or not p.is_dir():
        return None
    group = _open_group(p)
    if group is None or _find(group, IMAGE_KEYS) is None:
        return None
    return read_zarr


def read_zarr(path) -> list[tuple]:
    """Layer data tuples: the image (multiscale when large) and the mask, if the store has one."""
    if isinstance(path, list):
        path = path[0]
    p = Path(str(path))
    group = _open_group(p)
    if group is None:
        raise ValueError(f"{p} is not a zarr store")
    node = _find(group, IMAGE_KEYS)
    if node is None:
        raise ValueError(f"{p} holds no 'image' array or group")
    image_levels = _levels(node)
    full = image_levels[0]
    if full.ndim not in (2, 3) or (full.ndim == 3 and full.shape[2] not in (3, 4)):
        raise ValueError(f"{p}/image has shape {full.shape}: expected H×W or H×W×3")
    rgb = full.ndim == 3
    multiscale = len(image_levels) > 1 or max(full.shape[:2]) > MULTISCALE_ABOVE
    if multiscale:
        image_levels = _pyramid(image_levels)
    name = p.name[: -len(".zarr")] if p.name.lower().endswith(".zarr") else p.name
    meta = {"name": name, "rgb": rgb, "multiscale": multiscale}
    if full.dtype == np.uint8:
        meta["contrast_limits"] = [0, 255]
    layers = [(image_levels if multiscale else full, meta, "image")]

    mnode = _find(group, MASK_KEYS)
    if mnode is not None:
        mask_levels = _levels(mnode)
        mfull = mask_levels[0]
        if tuple(mfull.shape) != tuple(full.shape[:2]):
            raise ValueError(f"{p}: the mask is {mfull.shape} but the image is {full.shape[:2]}")
        if not np.issubdtype(mfull.dtype, np.integer) and mfull.dtype != bool:
            raise ValueError(f"{p}: the mask has dtype {mfull.dtype}; labels must be integers")
        mmeta = {"name": f"{name} mask"}
        if mfull.shape[0] * mfull.shape[1] <= LABELS_IN_MEMORY:
            data = np.asarray(mfull)
            layers.append((data.astype(np.uint8) if data.dtype == bool else data, mmeta, "labels"))
        else:
            layers.append((_pyramid(mask_levels), {**mmeta, "multiscale": True}, "labels"))
    return layers


def write_zarr_sample(path, image, mask=None, *, levels: int = 1, chunks: int = 1024,
                      band: int | None = None) -> Path:
    """Write ``image`` (numpy/dask/zarr, H×W×3 or H×W) and an optional ``mask`` to a zarr store.

    ``levels`` > 1 stores a pyramid (``image/0``, ``image/1``, … each ½ the size, nearest
    neighbour; the mask too). Level 0 is copied band by band (``band`` rows, default ``chunks``)
    and each level is made from the stored one above it, so memory stays bounded.
    """
    import zarr

    path = Path(path)
    root = zarr.open_group(str(path), mode="w")
    band = band or chunks

    def write(key, data, kind):
        shape, dtype = tuple(data.shape), np.dtype(data.dtype)
        chunk = (chunks, chunks) + shape[2:]
        if levels <= 1:
            out = root.create_array(key, shape=shape, chunks=chunk, dtype=dtype)
            _copy_bands(data, out, band)
            return
        grp = root.create_group(key)
        grp.attrs["multiscale"] = {"levels": levels, "downsample": 2, "kind": kind}
        src = data
        for lev in range(levels):
            if lev:
                shape = (-(-shape[0] // 2), -(-shape[1] // 2)) + shape[2:]
            out = grp.create_array(str(lev), shape=shape, chunks=chunk, dtype=dtype)
            _copy_bands(src, out, band, step=1 if lev == 0 else 2)
            src = out

    write("image", image, "image")
    if mask is not None:
        m = mask if np.dtype(mask.dtype) != bool else _AsUint8(mask)
        write("mask", m, "labels")
    return path


class _AsUint8:
    """A bool array read band by band as uint8 (0/1)."""

    def __init__(self, arr):
        self.arr, self.shape, self.dtype = arr, arr.shape, np.dtype(np.uint8)

    def __getitem__(self, key):
        return np.asarray(self.arr[key]).astype(np.uint8)


def _copy_bands(src, out, band: int, step: int = 1) -> None:
    """out[...] = src[::step, ::step], ``band`` output rows at a time."""
    for y in range(0, out.shape[0], band):
        y1 = min(out.shape[0], y + band)
        out[y:y1] = np.asarray(src[y * step:y1 * step:step, ::step])
