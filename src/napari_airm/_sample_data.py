"""A procedurally generated ultra-high-resolution sample: an image, a rough mask and the truth.

``make_sample`` draws a smooth textured background with two objects whose boundaries carry
fine detail (a star-shaped blob with thin tapering spikes and a serrated leaf with a thin
stem), shaded and textured so that the boundaries are visible, with mild noise. The coarse
mask is the ground truth degraded the way a rough annotation is: downscaled ×16 and upscaled
(thin parts vanish, corners round off), plus a few local dilations and erosions.

Everything is deterministic for a given seed and fast (about a second for 3072×4096); nothing
is downloaded. The napari sample-data entry (``airm_sample``) wraps it.
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["make_sample", "make_sample_labels", "airm_sample"]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], channels: int = 1,
                  out_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Multi-octave value noise in about [-1, 1], float32 H×W×C (built at ``shape``, resized
    to ``out_shape`` when given)."""
    h, w = shape
    acc = np.zeros((h, w, channels), np.float32)
    for cells, amp in ((3, 1.0), (7, 0.5), (17, 0.25), (41, 0.12)):
        grid = rng.uniform(-1, 1, (cells, max(2, int(cells * w / h)), channels)).astype(np.float32)
        acc += amp * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, channels)
    if out_shape is not None and out_shape != shape:
        acc = cv2.resize(acc, out_shape[::-1], interpolation=cv2.INTER_LINEAR)
        acc = acc.reshape(*out_shape, channels)
    return acc


def _box(h: int, w: int, cy: float, cx: float, reach: float) -> tuple[slice, slice]:
    return (slice(max(0, int(cy - reach)), min(h, int(cy + reach) + 1)),
            slice(max(0, int(cx - reach)), min(w, int(cx + reach) + 1)))


def _polar(box: tuple[slice, slice], cy: float, cx: float):
    """Radius and angle of every pixel of ``box`` around (cy, cx), float32."""
    dy = (np.arange(box[0].start, box[0].stop, dtype=np.float32) - cy)[:, None]
    dx = (np.arange(box[1].start, box[1].stop, dtype=np.float32) - cx)[None, :]
    return np.sqrt(dy * dy + dx * dx), np.arctan2(dy, dx)


def _lookup(table: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Sample a periodic table (over [-pi, pi)) at angles ``theta`` (nearest entry)."""
    n = len(table)
    idx = ((theta + np.float32(np.pi)) * np.float32(n / (2 * np.pi))).astype(np.int32)
    return table[np.minimum(idx, n - 1)]


def _star(rng, h, w, s):
    """A lobed blob with thin tapering spikes: (box, inside, r/r(θ), θ) inside its box."""
    cy, cx, base = 0.52 * h, 0.40 * w, 0.25 * s
    t = np.linspace(-np.pi, np.pi, 1 << 16, endpoint=False)
    phase = rng.uniform(0, 2 * np.pi, 4)
    r = base * (1 + 0.13 * np.sin(3 * t + phase[0]) + 0.06 * np.sin(7 * t + phase[1])
                + 0.025 * np.sin(19 * t + phase[2]) + 0.012 * np.sin(53 * t + phase[3]))
    longest = 0.0
    for _ in range(7):
        angle, half_width, length = (rng.uniform(-np.pi, np.pi), rng.uniform(0.018, 0.04),
                                     rng.uniform(0.35, 0.75))
        d = np.abs(np.angle(np.exp(1j * (t - angle))))  # wrapped angular distance
        r += base * length * np.clip(1 - d / half_width, 0, 1) ** 1.6
        longest = max(longest, length)
    box = _box(h, w, cy, cx, base * (1.25 + longest))
    rad, theta = _polar(box, cy, cx)
    rel = rad / _lookup(r.astype(np.float32), theta)
    return box, rel <= 1, rel, theta


def _leaf(rng, h, w, s):
    """A serrated ellipse with a thin curved stem: (box, inside) with the stem drawn in."""
    cy, cx = 0.30 * h, min(0.80 * w, 0.40 * w + 0.62 * s)
    a, b = 0.15 * s, 0.085 * s
    rot = rng.uniform(-0.5, 0.5)
    t = np.linspace(-np.pi, np.pi, 1 << 14, endpoint=False) - rot
    r = a * b / np.sqrt((b * np.cos(t)) ** 2 + (a * np.sin(t)) ** 2)
    r *= 1 + 0.035 * np.abs(np.sin(16 * t)) ** 0.5 - 0.02
    box = _box(h, w, cy, cx + 0.11 * s, a + 0.2 * s)
    rad, theta = _polar(box, cy, cx)
    inside = (rad <= _lookup(r.astype(np.float32), theta)).astype(np.uint8)
    # the stem: a thin polyline from the leaf's tip, curving down and out
    tip = np.array([cx - a * np.cos(rot) - box[1].start, cy - a * np.sin(rot) - box[0].start])
    ts = np.linspace(0, 1, 40)
    stem = np.stack([tip[0] + 0.18 * s * ts, tip[1] + 0.17 * s * ts ** 1.7
                     + 0.02 * s * np.sin(6 * ts)], 1)
    cv2.polylines(inside, [np.round(stem * 16).astype(np.int32)], False, 1,
                  thickness=max(2, int(s / 350)), lineType=cv2.LINE_8, shift=4)
    return box, inside.astype(bool)


def _degrade(gt: np.ndarray, rng: np.random.Generator, s: int, factor: int = 16) -> np.ndarray:
    """A rough annotation of ``gt``: ×``factor`` down/up-sampling plus local dilations/erosions."""
    h, w = gt.shape
    small = cv2.resize(gt.astype(np.uint8) * 255, (max(2, w // factor), max(2, h // factor)),
                       interpolation=cv2.INTER_AREA)
    coarse = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR) > 127
    edge = cv2.morphologyEx(small, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    ys, xs = np.nonzero(edge)
    if len(ys) == 0:
        return coarse
    for i in range(6):
        k = rng.integers(len(ys))
        cy, cx = int((ys[k] + 0.5) * h / small.shape[0]), int((xs[k] + 0.5) * w / small.shape[1])
        rho = int(rng.uniform(0.03, 0.07) * s)
        y0, y1, x0, x1 = max(0, cy - rho), min(h, cy + rho), max(0, cx - rho), min(w, cx + rho)
        patch = coarse[y0:y1, x0:x1].astype(np.uint8)
        ksize = 2 * int(rng.uniform(0.006, 0.018) * s) + 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (ksize, ksize))
        changed = (cv2.dilate if i % 2 == 0 else cv2.erode)(patch, kernel) > 0
        yy, xx = np.ogrid[y0:y1, x0:x1]
        window = (yy - cy) ** 2 + (xx - cx) ** 2 <= rho * rho
        coarse[y0:y1, x0:x1] = np.where(window, changed, patch > 0)
    return coarse


def make_sample_labels(height: int = 3072, width: int = 4096, seed: int = 0):
    """Like :func:`make_sample`, but coarse and ground truth as uint8 labels (one id per object)."""
    if height < 64 or width < 64:
        raise ValueError(f"the sample needs at least 64×64 pixels, got {height}×{width}")
    h, w, s = int(height), int(width), int(min(height, width))
    rng = np.random.default_rng(seed)

    # background: smooth colour noise around a muted green-grey with a soft vertical gradient,
    # built at 1/8 resolution and upsampled once (uint8, so full-resolution passes stay cheap)
    lh, lw = max(8, h // 8), max(8, w // 8)
    low = 120 + 34 * _smooth_noise(rng, (lh, lw), 1) + 12 * _smooth_noise(rng, (lh, lw), 3)
    low += np.linspace(-18, 18, lh, dtype=np.float32)[:, None, None]
    low *= np.array([0.85, 1.0, 0.9], np.float32)
    low = np.clip(low, 0, 255).astype(np.uint8)
    image = cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)

    star_box, star_in, star_rel, star_theta = _star(rng, h, w, s)
    leaf_box, leaf_in = _leaf(rng, h, w, s)
    gt = np.zeros((h, w), np.uint8)
    gt[leaf_box][leaf_in] = 2
    gt[star_box][star_in] = 1  # the star lies in front

    # objects: shaded and textured, blended in with a soft (anti-aliased) edge, box by box
    lbh, lbw = leaf_box[0].stop - leaf_box[0].start, leaf_box[1].stop - leaf_box[1].start
    leaf_rgb = np.array([70, 150, 55], np.float32) * (
        1 + 0.25 * _smooth_noise(rng, (max(8, lbh // 8), max(8, lbw // 8)), 1, (lbh, lbw)))
    shade = (1.15 - 0.45 * np.minimum(star_rel, 1.2) ** 2)
    shade *= 0.9 + 0.1 * np.sin(40 * star_theta + 12 * star_rel)
    star_rgb = np.array([205, 120, 60], np.float32) * shade[..., None]
    for box, rgb, obj_id in ((leaf_box, leaf_rgb, 2), (star_box, star_rgb, 1)):
        alpha = cv2.GaussianBlur((gt[box] == obj_id).astype(np.float32), (0, 0), 0.8)[..., None]
        part = image[box].astype(np.float32)
        image[box] = np.clip(part + alpha * (rgb - part), 0, 255).astype(np.uint8)
    noise = rng.integers(0, 13, (h, w), dtype=np.uint8)
    image = cv2.subtract(cv2.add(image, cv2.merge([noise] * 3)), (6, 6, 6, 0))

    coarse = np.zeros((h, w), np.uint8)
    coarse[_degrade(gt == 2, rng, s)] = 2
    coarse[_degrade(gt == 1, rng, s)] = 1
    return image, coarse, gt


def make_sample(height: int = 3072, width: int = 4096, seed: int = 0):
    """An ultra-high-resolution test scene: ``(image uint8 H×W×3, coarse bool H×W, gt bool H×W)``.

    Deterministic for a given ``seed``; about a second at the default 3072×4096.
    """
    image, coarse, gt = make_sample_labels(height, width, seed)
    return image, coarse > 0, gt > 0


def airm_sample():
    """napari sample data: the image, the hidden ground truth and, on top (selected), the
    coarse mask (one id per object): the layer to refine is the top one, and the truth's name
    keeps it out of the widgets' defaults whichever is opened first."""
    image, coarse, gt = make_sample_labels()
    return [
        (image, {"name": "AIRM sample image", "rgb": True}, "image"),
        (gt, {"name": "ground truth", "visible": False}, "labels"),
        (coarse, {"name": "coarse mask"}, "labels"),
    ]
