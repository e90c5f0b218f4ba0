"""Coarse-mask synthesis from ground truth, the way CascadePSP / CRM train.

Three modes (and a near-identity share that any of them can carry, ``identity_share``):

* ``perturb``: draw a target IoU in [0.8, 1.0]; simplify the contour, cut out / add random
  polygons, then apply random local dilations / erosions (and boundary jitter) until the IoU
  target is reached — bounded iterations, all on the (small) crop with OpenCV, so a sample
  costs a few milliseconds.
* ``lowres``: what a low-resolution segmenter gives: downscale ×8–16, upsample, threshold.
* ``identity``: a mask that is already (nearly) right — the ground truth itself, its boundary
  moved locally by at most 1–2 px, or a ×2–×4 down-up of it. A refiner must learn to give such a
  mask back unchanged when the image gives no reason to move it (DESIGN §3, "do no harm").

Every function takes a ``numpy.random.Generator`` so fixed validation masks are reproducible.
"""
from __future__ import annotations

import cv2
import numpy as np


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def _random_polygon(rng: np.random.Generator, center, radius: float, vertices: int) -> np.ndarray:
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    radii = radius * rng.uniform(0.4, 1.0, vertices)
    pts = np.stack([center[0] + radii * np.cos(angles), center[1] + radii * np.sin(angles)], 1)
    return np.round(pts).astype(np.int32)


def _boundary_points(mask: np.ndarray) -> np.ndarray:
    u8 = mask.astype(np.uint8)
    edge = cv2.morphologyEx(u8, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    ys, xs = np.nonzero(edge)
    return np.stack([xs, ys], 1)


def _simplify_contours(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Polygonal approximation of the outline: loses fine detail like a rough annotation."""
    u8 = mask.astype(np.uint8)
    contours, hierarchy = cv2.findContours(u8, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return mask
    out = np.zeros_like(u8)
    eps_scale = rng.uniform(0.002, 0.02)
    for i, c in enumerate(contours):
        eps = eps_scale * cv2.arcLength(c, True)
        approx = cv2.approxPolyDP(c, eps, True)
        is_hole = hierarchy is not None and hierarchy[0][i][3] >= 0
        cv2.fillPoly(out, [approx], 0 if is_hole else 1)
    return out.astype(bool)


def _local_morph(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dilate or erode inside a random disc centred on the boundary."""
    pts = _boundary_points(mask)
    h, w = mask.shape
    if len(pts) == 0:
        return mask
    cx, cy = pts[rng.integers(len(pts))]
    radius = int(rng.uniform(0.05, 0.25) * max(h, w)) + 3
    k = int(rng.integers(1, max(2, radius // 3) + 1)) * 2 + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    y0, y1 = max(cy - radius, 0), min(cy + radius + 1, h)
    x0, x1 = max(cx - radius, 0), min(cx + radius + 1, w)
    patch = mask[y0:y1, x0:x1].astype(np.uint8)
    op = cv2.dilate if rng.random() < 0.5 else cv2.erode
    changed = op(patch, kernel).astype(bool)
    yy, xx = np.ogrid[y0:y1, x0:x1]
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
    out = mask.copy()
    out[y0:y1, x0:x1] = np.where(disc, changed, patch.astype(bool))
    return out


def _polygon_edit(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add or cut a random polygon that touches the boundary."""
    pts = _boundary_points(mask)
    h, w = mask.shape
    if len(pts) == 0:
        return mask
    center = pts[rng.integers(len(pts))]
    poly = _random_polygon(rng, center, rng.uniform(0.03, 0.15) * max(h, w), int(rng.integers(3, 9)))
    u8 = mask.astype(np.uint8)
    cv2.fillPoly(u8, [poly], 1 if rng.random() < 0.5 else 0)
    return u8.astype(bool)


def _jitter(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boundary jitter: blur the mask and threshold a noisy field."""
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), rng.uniform(1.0, 3.0))
    noise = cv2.GaussianBlur(rng.standard_normal(mask.shape).astype(np.float32), (0, 0), 2.0)
    return soft + 0.25 * noise / (noise.std() + 1e-6) > 0.5


def down_up(gt: np.ndarray, factor: float) -> np.ndarray:
    """Downscale by ``factor`` (area), upsample back bilinearly, threshold at ½."""
    h, w = gt.shape
    sh, sw = max(1, int(round(h / factor))), max(1, int(round(w / factor)))
    small = cv2.resize(gt.astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR) > 0.5


def lowres_coarse(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a low-resolution model gives: downscale ×8–16, upsample bilinearly, threshold."""
    return down_up(gt, rng.uniform(8, 16))


def boundary_noise(gt: np.ndarray, rng: np.random.Generator, amplitude=(1.0, 2.0)) -> np.ndarray:
    """The boundary moved in and out locally by at most ``amplitude[1]`` pixels.

    A smooth random offset field in [-a, a] (a drawn from ``amplitude``) is added to the signed
    distance to the boundary (±½ at the pixels on either side of it), and the sum thresholded at
    0: only pixels within ``ceil(a - ½)`` px of the GT boundary can change.
    """
    gt = gt.astype(bool)
    if not gt.any() or gt.all():
        return gt.copy()
    u8 = gt.astype(np.uint8)
    inside = cv2.distanceTransform(u8, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    outside = cv2.distanceTransform(1 - u8, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    signed = np.where(gt, inside - 0.5, 0.5 - outside)
    a = rng.uniform(*amplitude)
    field = cv2.GaussianBlur(rng.standard_normal(gt.shape).astype(np.float32), (0, 0),
                             rng.uniform(2.0, 6.0))
    field *= a / (np.abs(field).max() + 1e-6)
    return signed + field > 0


def near_identity_coarse(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A coarse mask that is already (nearly) right, in equal thirds: the ground truth itself,
    its boundary moved locally by 1–2 px (``boundary_noise``), or a ×2–×4 down-up."""
    kind = int(rng.integers(3))
    if kind == 0:
        return gt.astype(bool).copy()
    if kind == 1:
        return boundary_noise(gt, rng)
    return down_up(gt, rng.uniform(2, 4))


def perturb_coarse(gt: np.ndarray, rng: np.random.Generator, iou_range=(0.8, 1.0),
                   max_steps: int = 12) -> np.ndarray:
    """A coarse mask with IoU ≈ a target drawn from ``iou_range`` (never above the draw + slack)."""
    gt = gt.astype(bool)
    if not gt.any() or gt.all():
        return gt.copy()
    target = rng.uniform(*iou_range)
    coarse = _simplify_contours(gt, rng) if rng.random() < 0.7 else gt.copy()
    if rng.random() < 0.5:
        coarse = _jitter(coarse, rng)
    if rng.random() < 0.3:
        small = lowres_coarse(gt, rng) if rng.random() < 0.5 else coarse
        coarse = small
    edits = (_local_morph, _local_morph, _polygon_edit)
    for _ in range(max_steps):
        if mask_iou(coarse, gt) <= target:
            break
        candidate = edits[rng.integers(len(edits))](coarse, rng)
        if candidate.any():
            coarse = candidate
    return coarse


MODES = ("perturb", "lowres", "mixed", "identity")


def synthesize_coarse(gt: np.ndarray, rng: np.random.Generator, mode: str = "perturb",
                      lowres_share: float = 0.25, identity_share: float = 0.0) -> np.ndarray:
    """A coarse mask for ``gt``; ``mixed`` draws low-resolution ones with ``lowres_share``.

    With ``identity_share`` > 0, that share of the masks (in any mode) is near-identity
    (``near_identity_coarse``); at 0 no extra random number is drawn, so the masks are exactly
    those of a mix without near-identity cases.
    """
    if not 0.0 <= lowres_share <= 1.0:
        raise ValueError(f"lowres_share must lie in [0, 1], got {lowres_share}")
    if not 0.0 <= identity_share <= 1.0:
        raise ValueError(f"identity_share must lie in [0, 1], got {identity_share}")
    if mode not in MODES:
        raise ValueError(f"unknown coarse-mask mode {mode!r}; use 'perturb', 'lowres', 'mixed' "
                         f"or 'identity'")
    if mode == "identity" or (identity_share > 0 and rng.random() < identity_share):
        return near_identity_coarse(gt, rng)
    if mode == "perturb":
        return perturb_coarse(gt, rng)
    if mode == "lowres":
        return lowres_coarse(gt, rng)
    return lowres_coarse(gt, rng) if rng.random() < lowres_share else perturb_coarse(gt, rng)
