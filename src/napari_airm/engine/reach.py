"""The trust region: refinement may move the given boundary by at most a *reach*.

Outside the reach the given mask stands exactly, whatever any stage of the network decided
(DESIGN.md §3, "do no harm"). A pixel may change only when its distance to the given boundary
is at most the reach: fg pixels count their distance to the nearest bg pixel, bg pixels to the
nearest fg pixel, so a boundary pixel is at distance 1 and ``reach = r`` lets the boundary move
r pixels inwards or outwards.

The automatic reach follows the image (a share of its mean side) and the object: it never
exceeds ``CORE_SHARE`` of the local inradius of the object or of the gap on either side of the
boundary, so a thin vessel or a small nucleus keeps its core and two close objects keep the gap
between them. "Local inradius" is the largest distance-to-boundary within ``radius`` pixels (a
max filter), so the cap follows a tapering structure instead of taking its thickest part.
A reach given in pixels is exactly that many pixels, without the object cap.

Everything is computed from the given mask in a window; ``Reach.halo`` pixels of context around
the window make the result inside it exact, so tiles agree with one big tile.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from .errors import InputError

# Automatic reach (chosen on DUTS val, docs/performance.md "Trust region and boundary solve"):
REACH_SHARE = 1 / 40  # of the mean image side: 9 px at 350 px, 73 px for a 3504×2336 photo
REACH_MIN = 3  # pixels: even a small image's boundary may move this far
CORE_RULE = "local"  # "local": the thickness where the boundary is; "component": the object's inradius
CORE_SHARE = 0.5  # at most half the local inradius of the object / the gap on either side


@dataclass(frozen=True)
class Reach:
    """How far refinement may move the given boundary (pixels), and the object cap."""

    radius: int
    core_share: float | None = CORE_SHARE  # None: the radius alone

    @property
    def ceiling(self) -> int:
        """Inradius above which the object cap no longer binds (pixels)."""
        return math.ceil(self.radius / self.core_share) + 1 if self.core_share else 0

    @property
    def halo(self) -> int:
        """Context (pixels) around a window for an exact ``allowed`` inside it."""
        return self.radius + 2 * self.ceiling + 2

    def allowed(self, given: np.ndarray) -> np.ndarray:
        """Bool map of the pixels of ``given`` (bool, h×w) that refinement may change."""
        fg = np.ascontiguousarray(given, dtype=np.uint8)
        if not fg.any() or fg.all():
            return np.zeros(fg.shape, bool)
        d_in = cv2.distanceTransform(fg, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        d_out = cv2.distanceTransform(1 - fg, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        dist = np.where(fg > 0, d_in, d_out)
        near = dist <= self.radius
        if not self.core_share:
            return near
        # each pixel takes the smaller cap of the nearest boundary pixel on either side
        cap = np.full(fg.shape, np.float32(self.radius))
        if CORE_RULE == "component":
            for side, mask in ((d_in, fg), (d_out, 1 - fg)):
                n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
                inradius = ndimage.maximum(side, labels, np.arange(n)) if n > 1 else np.zeros(1)
                comp_cap = self.core_share * np.asarray(inradius, np.float32)
                comp_cap[0] = np.inf
                edge = (side > 0) & (side < 1.5)
                _, nearest = cv2.distanceTransformWithLabels((~edge).astype(np.uint8), cv2.DIST_L2, 5,
                                                             labelType=cv2.DIST_LABEL_PIXEL)
                side_cap = np.concatenate([[0], comp_cap[labels[edge]]]).astype(np.float32)
                np.minimum(cap, side_cap[nearest], out=cap)
            return near & (dist <= cap)
        for side in (d_in, d_out):
            edge = (side > 0) & (side < 1.5)
            # a pixel's climb can stall on a corner of the digital boundary: take the largest
            # thickness of the boundary pixels around it
            t_map = np.zeros(fg.shape, np.float32)
            t_map[edge] = _climb(side, edge, self.ceiling)
            thickness = cv2.dilate(t_map, np.ones((5, 5), np.uint8))[edge]
            _, nearest = cv2.distanceTransformWithLabels((~edge).astype(np.uint8), cv2.DIST_L2, 5,
                                                         labelType=cv2.DIST_LABEL_PIXEL)
            side_cap = np.concatenate([[0], self.core_share * thickness]).astype(np.float32)
            np.minimum(cap, side_cap[nearest], out=cap)
        return near & (dist <= cap)


CLIMB_GAIN = 0.3  # along a normal the distance grows by the step's length, along a ridge far less
_STEPS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _climb(d: np.ndarray, edge: np.ndarray, ceiling: int) -> np.ndarray:
    """Local inradius at each boundary pixel of one side (``d``: distance to the other side):
    walk inwards while each step gains at least CLIMB_GAIN of its length in distance, i.e.
    along the boundary's normal, and stop on the medial axis. A thin branch next to a thick trunk stops
    on its own centre line (along the ridge, towards the trunk, d grows much slower)."""
    h, w = d.shape
    pad = np.pad(d, 1)  # outside the window: distance 0, never climbed into
    ys, xs = np.nonzero(edge)
    ys, xs = ys + 1, xs + 1
    value = pad[ys, xs].copy()
    active = np.arange(len(ys))
    offsets = np.array(_STEPS)
    gain = CLIMB_GAIN * np.hypot(offsets[:, 0], offsets[:, 1]).astype(np.float32)
    for _ in range(ceiling):
        if len(active) == 0:
            break
        cy, cx = ys[active], xs[active]
        around = np.stack([pad[cy + dy, cx + dx] for dy, dx in _STEPS]) - value[active]
        best = np.argmax(around / gain[:, None], axis=0)
        ok = around[best, np.arange(len(active))] >= gain[best]
        active = active[ok]
        best = best[ok]
        ys[active] += offsets[best, 0]
        xs[active] += offsets[best, 1]
        value[active] = pad[ys[active], xs[active]]
        active = active[value[active] < ceiling]
    return np.minimum(value, np.float32(ceiling))


def default_reach(height: int, width: int) -> Reach:
    """The automatic reach for an image of this size (see REACH_SHARE, CORE_SHARE)."""
    return Reach(max(REACH_MIN, round(REACH_SHARE * (height + width) / 2)), CORE_SHARE)


def resolve_reach(reach, height: int, width: int) -> Reach | None:
    """``"auto"`` → ``default_reach``; a whole number of pixels ≥ 1 → exactly that; None → no
    trust region (the network alone decides everywhere)."""
    if reach is None:
        return None
    if isinstance(reach, str):
        if reach != "auto":
            raise InputError(f"reach must be 'auto', a number of pixels or None, not {reach!r}")
        return default_reach(height, width)
    try:
        whole = not isinstance(reach, bool) and float(reach).is_integer() and reach >= 1
    except (TypeError, ValueError):
        whole = False
    if not whole:
        raise InputError(f"reach must be a whole number of pixels of at least 1, got {reach!r}")
    return Reach(int(reach), None)
