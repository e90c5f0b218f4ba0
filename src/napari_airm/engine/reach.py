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

from .errors import InputError

# Automatic reach (chosen on DUTS val by the rule in docs/performance.md, "Trust region and
# boundary solve"; the table that chose them is docs/tuning/grid3.md):
REACH_SHARE = 0.1  # of the mean image side: 35 px at 350 px, 292 px for a 3504×2336 photo
REACH_MIN = 3  # pixels: even a small image's boundary may move this far
REACH_MAX = 256  # pixels: bounds the context a block needs, so memory never grows with the image
CORE_RULE = "component"  # "component": each object's (and gap's) inradius; "local": the thickness where the boundary is
CORE_SHARE = 0.5  # at most half the local inradius of the object / the gap on either side
CORE_MAX = 32  # pixels: objects and gaps with a larger inradius are not capped (bounds the halo)


@dataclass(frozen=True)
class Reach:
    """How far refinement may move the given boundary (pixels), and the object cap."""

    radius: int
    core_share: float | None = CORE_SHARE  # None: the radius alone

    @property
    def ceiling(self) -> int:
        """Inradius above which the object cap no longer binds (pixels)."""
        if not self.core_share:
            return 0
        return min(math.ceil(self.radius / self.core_share) + 1, CORE_MAX)

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
        # each pixel takes the smaller cap of the nearest structure on either side
        cap_of = _component_caps if CORE_RULE == "component" else _local_caps
        cap = np.full(fg.shape, np.float32(self.radius))
        for side, zeros in ((d_in, 1 - fg), (d_out, fg)):
            side_cap = cap_of(side, zeros, self.core_share, self.ceiling)
            if side_cap is not None:
                np.minimum(cap, side_cap, out=cap)
        return near & (dist <= cap)


def _component_caps(side: np.ndarray, zeros: np.ndarray, share: float, ceiling: int):
    """Per pixel: ``share`` of the inradius of the nearest component of this side (its own
    included; ``zeros`` is 0 on the side's pixels), inf for components at least ``ceiling``
    thick; None when no component is thinner (the common case, without labelled transforms)."""
    if not _has_thin_component(side, zeros, ceiling):
        return None
    _, nearest = cv2.distanceTransformWithLabels(zeros, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_CCOMP)
    own = zeros == 0
    inradius = np.zeros(int(nearest.max()) + 1, np.float32)
    np.maximum.at(inradius, nearest[own], side[own])
    return np.where(inradius >= ceiling, np.inf, share * inradius).astype(np.float32)[nearest]


def _local_caps(side: np.ndarray, zeros: np.ndarray, share: float, ceiling: int):
    """The "local" rule (kept for the tuning grid): ``share`` of the thickness where the
    nearest boundary pixel of this side is (``_climb``), inf at the ceiling."""
    edge = (side > 0) & (side < 1.5)
    # a pixel's climb can stall on a corner of the digital boundary: take the largest
    # thickness of the boundary pixels around it
    t_map = np.zeros(side.shape, np.float32)
    t_map[edge] = _climb(side, edge, ceiling)
    thickness = cv2.dilate(t_map, np.ones((5, 5), np.uint8))[edge]
    _, nearest = cv2.distanceTransformWithLabels((~edge).astype(np.uint8), cv2.DIST_L2, 5,
                                                 labelType=cv2.DIST_LABEL_PIXEL)
    capped = np.where(thickness >= ceiling, np.inf, share * thickness)
    return np.concatenate([[0], capped]).astype(np.float32)[nearest]


def _has_thin_component(side: np.ndarray, zeros: np.ndarray, ceiling: int) -> bool:
    """Whether any component of this side (the pixels where ``zeros`` is 0) has an inradius
    below ``ceiling`` — the cheap test that lets most windows skip the labelled transforms."""
    own = zeros == 0
    n, labels = cv2.connectedComponents(own.astype(np.uint8), connectivity=8)
    if n <= 1:
        return False
    inradius = np.zeros(n, np.float32)
    np.maximum.at(inradius, labels[own], side[own])
    return bool((inradius[1:] < ceiling).any())


CLIMB_GAIN = 0.3  # along a normal the distance grows by the step's length, along a ridge far less
_STEPS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _climb(d: np.ndarray, edge: np.ndarray, ceiling: int) -> np.ndarray:
    """Local inradius at each boundary pixel of one side (``d``: distance to the other side):
    walk inwards while each step gains at least CLIMB_GAIN of its length in distance, i.e.
    along the boundary's normal, and stop on the medial axis. A thin branch next to a thick trunk stops
    on its own centre line (along the ridge, towards the trunk, d grows much slower)."""
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


class ReachMap:
    """The ``allowed`` map of a whole image, computed on a fixed lattice of BLOCK-pixel blocks
    (each with ``Reach.halo`` of context) and cached: whatever the tiling, every tile sees the
    same map, and each block is computed once however many tiles read it."""

    BLOCK = 2048
    CACHED = 4  # blocks kept (a row of level-0 tiles reads at most a few at a time)

    def __init__(self, reach: Reach, read_given, height: int, width: int):
        self.reach, self.read_given = reach, read_given
        self.height, self.width = height, width
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def allowed(self, box) -> np.ndarray:
        y0, y1, x0, x1 = box
        out = np.zeros((y1 - y0, x1 - x0), bool)
        b = self.BLOCK
        for by in range(y0 // b, (y1 - 1) // b + 1):
            for bx in range(x0 // b, (x1 - 1) // b + 1):
                block = self._block(by, bx)
                cy0, cx0 = by * b, bx * b
                iy0, iy1 = max(y0, cy0), min(y1, cy0 + block.shape[0])
                ix0, ix1 = max(x0, cx0), min(x1, cx0 + block.shape[1])
                out[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = block[iy0 - cy0:iy1 - cy0, ix0 - cx0:ix1 - cx0]
        return out

    def _block(self, by: int, bx: int) -> np.ndarray:
        key = (by, bx)
        if key not in self._cache:
            b, h = self.BLOCK, self.reach.halo
            core = (by * b, min(self.height, (by + 1) * b), bx * b, min(self.width, (bx + 1) * b))
            outer = (max(0, core[0] - h), min(self.height, core[1] + h),
                     max(0, core[2] - h), min(self.width, core[3] + h))
            given = np.asarray(self.read_given(outer)) > 0.5
            allowed = self.reach.allowed(given)
            self._cache[key] = allowed[core[0] - outer[0]:core[1] - outer[0], core[2] - outer[2]:core[3] - outer[2]]
            while len(self._cache) > self.CACHED:
                self._cache.pop(next(iter(self._cache)))
        return self._cache[key]


def default_reach(height: int, width: int) -> Reach:
    """The automatic reach for an image of this size (REACH_SHARE of the mean side, within
    REACH_MIN..REACH_MAX, capped per object by CORE_SHARE)."""
    share = round(REACH_SHARE * (height + width) / 2)
    return Reach(min(REACH_MAX, max(REACH_MIN, share)), CORE_SHARE)


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
