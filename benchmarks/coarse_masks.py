"""Coarse-mask generators for the quality benchmark, independent of the training code.

The training pipeline draws its coarse masks from ``napari_airm.data.perturb``; a benchmark that
uses only those can flatter a model trained on them. The generators here share no code with it:

* ``gt``: the ground truth itself (a perfect mask must come back intact).
* ``downup4``: the ground truth area-downscaled ×4, upscaled bilinearly, thresholded at 0.5
  (a near-perfect mask: the outline is only rounded at the 4-px scale).
* ``polygon``: what a quick human or a polygon tool gives, then a low-resolution segmenter:
  every outline (holes included) simplified to a polygon whose vertices are jittered, a few
  local dilations / erosions at random places on the boundary, then a ×12 area down-up.

Every generator is a pure function of ``(gt, seed)``; ``gt`` and ``downup4`` ignore the seed.
"""
from __future__ import annotations

import cv2
import numpy as np

MODES = ("gt", "downup4", "polygon")

POLYGON_EPSILON = (0.004, 0.012)  # simplification tolerance, share of the image's longer side
POLYGON_EPSILON_CAP = 0.15        # ... at most this share of the outline's own size (√area)
POLYGON_JITTER = 0.5              # vertex jitter σ, in units of the simplification tolerance
LOCAL_EDITS = (2, 6)              # number of local dilations / erosions (low inclusive, high exclusive)
LOCAL_EDIT_REGION = (0.03, 0.08)  # radius of the edited region, share of the image's shorter side
LOCAL_EDIT_DEPTH = (0.004, 0.015)  # dilation / erosion radius, share of the shorter side (≥ 1 px)
POLYGON_DOWNSCALE = 12


def _binary(gt) -> np.ndarray:
    gt = np.asarray(gt)
    if gt.ndim != 2:
        raise ValueError(f"ground-truth mask must be 2-D, got shape {gt.shape}")
    return gt.astype(bool, copy=False)


def down_up(mask: np.ndarray, factor: int) -> np.ndarray:
    """Area-downscale by ``factor``, bilinear upscale to the original size, threshold at 0.5."""
    h, w = mask.shape
    small = cv2.resize(mask.astype(np.float32), (max(1, round(w / factor)), max(1, round(h / factor))),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR) > 0.5


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _depths(hierarchy: np.ndarray) -> list[int]:
    parents = hierarchy[0][:, 3]
    depths = []
    for i in range(len(parents)):
        depth, j = 0, parents[i]
        while j >= 0:
            depth, j = depth + 1, parents[j]
        depths.append(depth)
    return depths


def jittered_polygons(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every outline of ``mask`` (holes and islands in holes too) as a simplified polygon with
    jittered vertices, drawn outermost first: even nesting depth filled, odd depth cut out."""
    h, w = mask.shape
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_NONE)
    out = np.zeros((h, w), np.uint8)
    if not contours:
        return out.astype(bool)
    eps_share = rng.uniform(*POLYGON_EPSILON)
    depths = _depths(hierarchy)
    for depth in sorted(set(depths)):
        polys = []
        for i in (i for i, d in enumerate(depths) if d == depth):
            c = contours[i]
            size = np.sqrt(max(cv2.contourArea(c), float(len(c))))
            eps = max(0.75, min(eps_share * max(h, w), POLYGON_EPSILON_CAP * size))
            poly = cv2.approxPolyDP(c, eps, True).reshape(-1, 2).astype(np.float64)
            poly += rng.normal(0.0, POLYGON_JITTER * eps, poly.shape)
            polys.append(np.round(poly).astype(np.int32).reshape(-1, 1, 2))
        cv2.fillPoly(out, polys, 1 if depth % 2 == 0 else 0)
    return out.astype(bool)


def local_edits(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A few dilations / erosions, each confined to a disc centred on a random boundary pixel."""
    h, w = mask.shape
    edge = mask ^ cv2.erode(mask.astype(np.uint8), _disc(1)).astype(bool)
    ys, xs = np.nonzero(edge)
    if len(ys) == 0:
        return mask
    out = mask.copy()
    short = min(h, w)
    for _ in range(int(rng.integers(*LOCAL_EDITS))):
        k = int(rng.integers(len(ys)))
        cy, cx = int(ys[k]), int(xs[k])
        region = max(2, int(round(rng.uniform(*LOCAL_EDIT_REGION) * short)))
        depth = max(1, int(round(rng.uniform(*LOCAL_EDIT_DEPTH) * short)))
        y0, y1 = max(0, cy - region - depth), min(h, cy + region + depth + 1)
        x0, x1 = max(0, cx - region - depth), min(w, cx + region + depth + 1)
        window = out[y0:y1, x0:x1].astype(np.uint8)
        op = cv2.dilate if rng.random() < 0.5 else cv2.erode
        edited = op(window, _disc(depth)).astype(bool)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= region ** 2
        out[y0:y1, x0:x1] = np.where(inside, edited, out[y0:y1, x0:x1])
    return out


def polygon_coarse(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Jittered simplified polygons, local dilations / erosions, then a ×12 down-up.

    A case never becomes an empty mask with nothing to refine: when a step erases everything
    (objects of a few pixels), the last non-empty stage is returned (the edited polygons, the
    polygons, at worst the ground truth).
    """
    polys = jittered_polygons(gt, rng)
    shaped = local_edits(polys, rng)
    for candidate in (down_up(shaped, POLYGON_DOWNSCALE), shaped, polys):
        if candidate.any():
            return candidate
    return gt.copy()


def make_coarse(gt, mode: str, seed: int = 0) -> np.ndarray:
    """The coarse mask of ``gt`` for ``mode`` (one of ``MODES``); a fresh bool array."""
    gt = _binary(gt)
    if mode == "gt":
        return gt.copy()
    if mode == "downup4":
        return down_up(gt, 4)
    if mode == "polygon":
        return polygon_coarse(gt, np.random.default_rng(seed))
    raise ValueError(f"unknown coarse-mask mode {mode!r}; use one of {', '.join(MODES)}")
