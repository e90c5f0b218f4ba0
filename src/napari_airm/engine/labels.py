"""What kind of mask the user gave (one streaming pass), and object-by-object refinement of
label images: each id is refined in its own bounding box plus margin and written back only
over background or its own pixels, so neighbouring objects are never overwritten.

Ids are used as values only, never as indices: each block is relabelled to a dense range
(1..n for its n distinct ids) before its boxes are measured, so memory and time depend on the
number of objects, not on how large their ids are (hashes, tile offsets, uint64 above 2**63).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
from scipy import ndimage

from .errors import InputError
from .source import Box, ImageSource, MaskSource

SCAN_BLOCK = 2048  # mask pixels read at once (bounded memory)


@dataclass
class MaskSummary:
    kind: str = "binary"  # "binary" | "labels"
    empty: bool = True
    full: bool = True
    threshold: float = 0.0  # integer binary masks: foreground is value > threshold
    scale_255: bool = False
    boxes: dict[int, list[int]] = field(default_factory=dict)  # id -> [y0, y1, x0, x1]


def scan_mask(mask: MaskSource, tile: int = SCAN_BLOCK) -> MaskSummary:
    """Classify the mask (block by block) and, for label images only, collect per-id boxes in
    a second pass: binary masks never pay for the bounding boxes."""
    s = MaskSummary()
    dtype = mask.dtype
    values: set = set()
    for box in _blocks(mask):
        m = mask.read(box)
        if dtype == bool:
            s.empty &= not m.any()
            s.full &= bool(m.all())
            continue
        if np.issubdtype(dtype, np.floating):
            if not np.isfinite(m).all():
                raise InputError("coarse mask contains NaN or infinite values")
            if m.min() < 0 or m.max() > 1:
                raise InputError("a float coarse mask must hold probabilities in [0, 1]; "
                                 "use an integer array for labels")
            s.empty &= not (m > 0.5).any()
            s.full &= bool((m > 0.5).all())
            continue
        u = np.unique(m)
        if u[0] < 0:
            raise InputError(f"coarse mask has negative values ({u[0]}); labels must be >= 0")
        values.update(u.tolist())
    if dtype == bool or np.issubdtype(dtype, np.floating):
        s.threshold = 0.5
        return s
    if values <= {0, 1}:
        s.threshold = 0.0
    elif values <= {0, 255}:
        s.threshold, s.scale_255 = 127.0, True
    else:
        s.kind = "labels"
        for y0, y1, x0, x1 in _blocks(mask):
            _update_boxes(s.boxes, mask.read((y0, y1, x0, x1)), y0, x0)
    s.empty = values <= {0}
    s.full = values == {1} or values == {255}
    return s


def _blocks(mask: MaskSource):
    for y in range(0, mask.height, SCAN_BLOCK):
        for x in range(0, mask.width, SCAN_BLOCK):
            yield y, min(y + SCAN_BLOCK, mask.height), x, min(x + SCAN_BLOCK, mask.width)


def _update_boxes(boxes: dict[int, list[int]], block: np.ndarray, y: int, x: int) -> None:
    """Grow ``boxes`` by the ids of one block. The block is relabelled to 1..n first
    (``find_objects`` allocates one entry per value up to the largest)."""
    values, dense = np.unique(block, return_inverse=True)
    dense = dense.reshape(block.shape).astype(np.int64 if len(values) > 2**31 - 2 else np.int32)
    if values[0] != 0:  # no background in this block: shift so that id k is k + 1
        dense += 1
        values = np.concatenate([values[:1] * 0, values])
    for index, sl in enumerate(ndimage.find_objects(dense), start=1):
        if sl is None:
            continue
        label = int(values[index])
        y0, y1, x0, x1 = sl[0].start + y, sl[0].stop + y, sl[1].start + x, sl[1].stop + x
        if label in boxes:
            b = boxes[label]
            boxes[label] = [min(b[0], y0), max(b[1], y1), min(b[2], x0), max(b[3], x1)]
        else:
            boxes[label] = [y0, y1, x0, x1]


class Window:
    """A lazy rectangular view of an array-like (numpy, dask, zarr) by offset."""

    def __init__(self, array, box: Box):
        self.array, self.box = array, box
        y0, y1, x0, x1 = box
        extra = tuple(getattr(array, "shape", ())[2:])
        self.shape = (y1 - y0, x1 - x0) + extra
        self.dtype = array.dtype

    def __getitem__(self, key):
        ys, xs = key[0], key[1]
        y0, _, x0, _ = self.box
        return self.array[ys.start + y0:ys.stop + y0, xs.start + x0:xs.stop + x0]


def _as_id(value) -> int:
    """A label id given by the caller as a whole number (7, np.uint64(7), 7.0), else a clear
    InputError: 7.9 is not silently 7, True is not 1."""
    if isinstance(value, (bool, np.bool_)) or value is None:
        raise InputError(f"label ids must be whole numbers, not {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise InputError(f"label ids must be whole numbers, not {value!r}") from None
    if not np.isfinite(f) or f != int(f):
        raise InputError(f"label ids must be whole numbers, not {value!r}")
    return int(f)


def _select(labels: str | int | Iterable[int], boxes: dict[int, list[int]]) -> list[int]:
    if isinstance(labels, str):
        if labels != "all":
            raise InputError(f"labels must be 'all', an id or a list of ids, not {labels!r}")
        return sorted(boxes)
    if np.isscalar(labels) or labels is None:
        wanted = [_as_id(labels)]
    else:
        try:
            wanted = [_as_id(v) for v in labels]
        except TypeError:
            raise InputError(f"labels must be 'all', an id or a list of ids, not {labels!r}") from None
    missing = [v for v in wanted if v not in boxes]
    if missing:
        raise InputError(f"label id(s) {missing} do not occur in the coarse mask")
    return wanted


def refine_labels(refiner, image: ImageSource, mask: MaskSource, summary: MaskSummary, target,
                  labels, progress: Callable[[int, int], None] | None,
                  cancel: Callable[[], bool] | None, copy_input: bool = True):
    """Refine each selected id inside its box (+ margin) and write it back into ``target``."""
    H, W = mask.height, mask.width
    if copy_input and target is not mask.array:
        for y in range(0, H, SCAN_BLOCK):
            for x in range(0, W, SCAN_BLOCK):
                box = (y, min(y + SCAN_BLOCK, H), x, min(x + SCAN_BLOCK, W))
                target[box[0]:box[1], box[2]:box[3]] = mask.read(box)
    ids = _select(labels, summary.boxes)
    n = max(1, len(ids))
    for k, label in enumerate(ids):
        y0, y1, x0, x1 = summary.boxes[label]
        margin = max(32, int(0.15 * max(y1 - y0, x1 - x0)))
        box = (max(0, y0 - margin), min(H, y1 + margin), max(0, x0 - margin), min(W, x1 + margin))
        if box[1] - box[0] < 16 or box[3] - box[2] < 16:
            box = (max(0, box[0] - 16), min(H, box[1] + 16), max(0, box[2] - 16), min(W, box[3] + 16))
        sub_img = ImageSource.wrap(Window(image.array, box))
        sub_mask = MaskSource.wrap(Window(mask.array, box))
        label = np.array(label, dtype=mask.dtype)  # compare in the mask's dtype (uint64 > 2**63)

        def read(b: Box, sub_mask=sub_mask, label=label) -> np.ndarray:
            return (sub_mask.read(b) == label).astype(np.float32)

        def write(b: Box, values: np.ndarray, off=box, label=label) -> None:
            gy0, gy1, gx0, gx1 = b[0] + off[0], b[1] + off[0], b[2] + off[2], b[3] + off[2]
            current = np.asarray(target[gy0:gy1, gx0:gx1])
            new = current.copy()
            own = current == label
            new[values & ((current == 0) | own)] = label
            new[~values & own] = 0
            if not np.array_equal(new, current):
                target[gy0:gy1, gx0:gx1] = new

        def inner(done: int, total: int, k=k) -> None:
            if progress:
                progress(int(1000 * (k + done / max(total, 1))), 1000 * n)

        refiner.run(sub_img, read, box[1] - box[0], box[3] - box[2], write, inner, cancel)
    if progress:
        progress(1000 * n, 1000 * n)
    return target
