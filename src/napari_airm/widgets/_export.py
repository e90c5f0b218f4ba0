"""Write (image, corrected labels) pairs as a training folder: ``images/NAME.png`` (RGB) +
``masks/NAME.png`` (0/255), the layout ``napari_airm.api.train`` reads.

Each object id becomes its own binary mask, cropped to its box plus a margin, so an
ultra-high-resolution image never has to be written (or read) whole; boxes larger than
``max_side`` are cut into tiles, keeping the tiles that hold a boundary.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ._layers import LayerError, label_ids, safe_filename


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any 2-D grey / RGB / RGBA crop → uint8 H×W×3."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    if img.dtype == np.uint8:
        return np.ascontiguousarray(img)
    if img.dtype == bool:
        return img.astype(np.uint8) * 255
    img = img.astype(np.float32)
    if np.issubdtype(image.dtype, np.integer):
        top = float(np.iinfo(image.dtype).max)
    else:
        top = 1.0 if float(np.nanmax(img, initial=0)) <= 1.0 else float(np.nanmax(img))
    return np.clip(np.nan_to_num(img) / max(top, 1e-12) * 255 + 0.5, 0, 255).astype(np.uint8)


def _boxes(mask: np.ndarray, max_side: int, margin: int) -> list[tuple[int, int, int, int]]:
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    h, w = mask.shape
    pad_y = max(margin, (rows[-1] - rows[0]) // 10)
    pad_x = max(margin, (cols[-1] - cols[0]) // 10)
    y0, y1 = max(0, rows[0] - pad_y), min(h, rows[-1] + 1 + pad_y)
    x0, x1 = max(0, cols[0] - pad_x), min(w, cols[-1] + 1 + pad_x)
    if y1 - y0 <= max_side and x1 - x0 <= max_side:
        return [(y0, y1, x0, x1)]
    boxes = []
    for ty in range(y0, y1, max_side):
        for tx in range(x0, x1, max_side):
            box = (ty, min(y1, ty + max_side), tx, min(x1, tx + max_side))
            share = mask[box[0]:box[1], box[2]:box[3]].mean()
            if 0.01 < share < 0.99:  # a boundary inside
                boxes.append(box)
    return boxes


def export_pairs(pairs: Iterable[tuple[str, object, object]], folder: str | Path, *,
                 max_side: int = 2048, margin: int = 64,
                 report: Callable = lambda d, t, i=None: None,
                 cancelled: Callable[[], bool] = lambda: False) -> list[str]:
    """Write every (name, image, labels) pair; returns the sample names written."""
    from PIL import Image

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    pairs = list(pairs)
    written: list[str] = []
    for k, (name, image, labels) in enumerate(pairs):
        report(k, len(pairs), f"exporting {name}")
        lab = np.asarray(labels)
        ids = label_ids(lab)
        if not ids:
            raise LayerError(f"the labels of pair '{name}' are empty: paint or refine a mask first")
        for i in ids:
            mask = lab == i
            for t, (y0, y1, x0, x1) in enumerate(_boxes(mask, max_side, margin)):
                if cancelled():
                    from ..engine.errors import Cancelled

                    raise Cancelled("cancelled")
                stem = safe_filename(f"{name}_id{i}" + (f"_t{t}" if t else ""))
                rgb = to_rgb8(np.asarray(image[y0:y1, x0:x1]))
                Image.fromarray(rgb).save(folder / "images" / f"{stem}.png")
                Image.fromarray(mask[y0:y1, x0:x1].astype(np.uint8) * 255).save(
                    folder / "masks" / f"{stem}.png")
                written.append(stem)
    if not written:
        raise LayerError("nothing to export: no object had a boundary to learn from")
    return written
