"""Classical refinement baselines to measure the model against.

``grabcut_refine`` is OpenCV's GrabCut seeded by the coarse mask the way a user would seed it:
pixels well inside the coarse mask are definite foreground, pixels well outside are definite
background, and only the band around the coarse boundary is left for GrabCut to decide
(probable foreground inside the coarse mask, probable background outside). GrabCut then runs on
the bounding box of that band only, so its cost follows the boundary, not the image size.
"""
from __future__ import annotations

import cv2
import numpy as np


def default_band(height: int, width: int) -> int:
    """Band half-width in pixels: ~1% of (H + W), at least 3 px."""
    return max(3, int(round((height + width) / 100)))


def _object_band_cap(fg8: np.ndarray) -> int:
    """A band no wider than a quarter of the typical object's inradius (area-weighted median
    over connected components), so small objects (cells, nuclei) keep a definite-foreground core."""
    from scipy import ndimage

    n, labels = cv2.connectedComponents(fg8, connectivity=8)
    if n <= 1:
        return 1 << 30
    dist = cv2.distanceTransform(fg8, cv2.DIST_L2, 5)
    index = np.arange(1, n)
    inradius = np.asarray(ndimage.maximum(dist, labels, index))
    area = np.bincount(labels.ravel(), minlength=n)[1:]
    order = np.argsort(inradius)
    cum = np.cumsum(area[order])
    typical = inradius[order][np.searchsorted(cum, cum[-1] / 2)]
    return max(2, int(0.25 * typical))


def _to_uint8_rgb(image) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"image must be H×W, H×W×3 or H×W×4, got shape {img.shape}")
    img = img[..., :3]
    if img.dtype == np.uint8:
        return np.ascontiguousarray(img)
    if img.dtype == np.uint16:
        return np.ascontiguousarray((img >> 8).astype(np.uint8))
    if np.issubdtype(img.dtype, np.floating):
        return np.ascontiguousarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
    raise ValueError(f"image has unsupported dtype {img.dtype}; use uint8, uint16 or float in [0, 1]")


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def grabcut_refine(image, coarse, iterations: int = 5, band: int | None = None) -> np.ndarray:
    """Refine a binary ``coarse`` mask of ``image`` with GrabCut; returns a bool mask.

    ``band``: half-width in pixels of the undecided band around the coarse boundary
    (default ``default_band(H, W)``, capped at a quarter of the typical object's inradius so
    that small objects keep a definite core). An empty or all-foreground mask has no boundary to
    refine and is returned unchanged, as is the coarse mask when GrabCut cannot model a side
    (too few pixels of one class in the processed box).
    """
    coarse = np.asarray(coarse)
    if coarse.ndim != 2:
        raise ValueError(f"coarse mask must be 2-D, got shape {coarse.shape}")
    fg = coarse > (127 if coarse.dtype == np.uint8 and coarse.max() > 1 else 0)
    img = _to_uint8_rgb(image)
    if img.shape[:2] != fg.shape:
        raise ValueError(f"image is {img.shape[0]}x{img.shape[1]} but mask is "
                         f"{fg.shape[0]}x{fg.shape[1]}")
    if not fg.any() or fg.all():
        return fg.copy()
    h, w = fg.shape
    fg8 = fg.astype(np.uint8)
    user_band = band is not None
    band = max(1, int(band)) if user_band else default_band(h, w)

    # The band and a margin for the colour models: GrabCut only sees this box.
    edge = cv2.morphologyEx(fg8, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    ys, xs = np.nonzero(edge)
    margin = 2 * band + 2
    y0, y1 = max(0, ys.min() - margin), min(h, ys.max() + margin + 1)
    x0, x1 = max(0, xs.min() - margin), min(w, xs.max() + margin + 1)
    crop_fg = fg8[y0:y1, x0:x1]
    if not user_band:
        band = min(band, _object_band_cap(crop_fg))
    crop_img = img[y0:y1, x0:x1]

    kernel = _disc(band)
    sure_fg = cv2.erode(crop_fg, kernel, borderType=cv2.BORDER_REPLICATE).astype(bool)
    maybe = cv2.dilate(crop_fg, kernel, borderType=cv2.BORDER_REPLICATE).astype(bool)
    gc = np.full(crop_fg.shape, cv2.GC_BGD, np.uint8)
    gc[maybe & ~crop_fg.astype(bool)] = cv2.GC_PR_BGD
    gc[crop_fg.astype(bool) & ~sure_fg] = cv2.GC_PR_FGD
    gc[sure_fg] = cv2.GC_FGD
    # GrabCut needs samples of both classes for its colour models.
    has_fg = np.count_nonzero((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD))
    has_bg = np.count_nonzero((gc == cv2.GC_BGD) | (gc == cv2.GC_PR_BGD))
    if has_fg < 10 or has_bg < 10:
        return fg.copy()
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(crop_img, gc, None, bgd, fgd, int(iterations), cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return fg.copy()
    out = fg.copy()
    out[y0:y1, x0:x1] = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    return out
