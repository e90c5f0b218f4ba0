"""The full-resolution boundary solve (DESIGN.md §3, "what from the network, where from the
pixels"): the network decides what the object is; the exact boundary is a min-cut.

On the uncertain band only (within ``BAND`` pixels of the network's boundary or of the given
one, inside the trust region), each pixel's label minimises

    Σ unary(x) + Σ_{x~y} PAIRWISE · exp(−β‖I_x − I_y‖²) / dist(x, y) · [label x ≠ label y]

with ``unary`` built from the log-odds of the network (weight ``NET``), of colour models of the
two sides (``COLOUR``: histograms fitted in this window on the decided pixels around the band)
and of the given mask (``GIVEN``: a light pull towards what the user drew). Pixels outside the
band keep their label and act as boundary conditions. The graph holds only band pixels, so the
cost follows the boundary's length, not the window's area. PyMaxflow (Boykov–Kolmogorov) cuts
it: measured faster than OpenCV's GrabCut machinery on the same bands and, unlike it, open to a
unary of our own (docs/performance.md, "Trust region and boundary solve").
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

# Chosen on DUTS val by the rule in docs/performance.md ("Trust region and boundary solve"); the
# table that chose them is docs/tuning/grid3.md. With the stage-4 network only a strong pull to
# the given mask keeps every good mask within 0.5 IoU of itself.
BAND = 3  # pixels on either side of the network's / the given boundary that the cut decides
NET = 1.0  # weight of the network's log-odds
COLOUR = 0.5  # weight of the colour models' log-likelihood ratio
GIVEN = 6.0  # pull towards the given mask (log-odds units)
PAIRWISE = 0.5  # contrast-sensitive smoothness
LOGIT_CLIP = 6.0  # network log-odds beyond this are "sure": they only add stiffness
ITERATIONS = 1  # cuts; each later one refits the colour models to the previous cut (GrabCut-like)
COLOUR_BINS = 16  # per channel: 16³ colour histogram cells
COLOUR_RING = 12  # pixels around the band whose decided labels fit the colour models
# Where the pull to the given mask applies (``given_pull``). A good mask's boundary sits on the
# image's edge and a rough one's does not, and a correction the network makes far from the given
# boundary is not a pixel of lean: so the pull is scaled by how well the given boundary nearby
# lies on the strongest edge around it (EDGE: 0 = ignore the image, 1 = fully scaled), and fades
# with the distance to the given boundary (TAPER pixels after the first; None = everywhere).
EDGE = 0.0  # share of the pull that the image's edges decide
EDGE_RADIUS = 3  # pixels: the given boundary is compared with the strongest edge this close
EDGE_RIVAL = "network"  # what the given boundary's edge is compared with: the network's
#   boundary ("network": the image gives a reason to move only if that is on a stronger edge)
#   or the strongest edge within EDGE_RADIUS ("nearby")
EDGE_FLOOR = 0.02  # gradient magnitude (RGB in [0, 1]) below which an edge is noise: flat stays
TAPER = None  # pixels: the pull falls to 0 this far beyond the given boundary's first pixel
TAPER_GATE = False  # True: the taper acts only where the given boundary is off the image's edge
#   (in proportion to 1 - edge support, measured over band + TAPER pixels), so a boundary on an
#   edge keeps its full pull however far the network wants to move it

# How far the network's vote counts (``network_trust``): full when its global-stage mask and the
# given one overlap at least TRUST_FULL (IoU), none below TRUST_NONE. Training's coarse masks
# have IoU 0.8-1 with the truth, so a network answer further from the given mask than that is
# not a correction but a network out of its domain (HRF vessels: 0.08-0.19; DUTS val >= 0.8).
TRUST_NONE = 0.5
TRUST_FULL = 0.75

_PAIRS = ((0, 1, 1.0), (1, 0, 1.0), (1, 1, 2 ** -0.5), (1, -1, 2 ** -0.5))


@dataclass(frozen=True)
class SolveWeights:
    """The energy's weights; the defaults are the module's constants when it is made."""

    band: int = field(default_factory=lambda: BAND)
    net: float = field(default_factory=lambda: NET)
    colour: float = field(default_factory=lambda: COLOUR)
    given: float = field(default_factory=lambda: GIVEN)
    pairwise: float = field(default_factory=lambda: PAIRWISE)
    iterations: int = field(default_factory=lambda: ITERATIONS)
    edge: float = field(default_factory=lambda: EDGE)
    taper: float | None = field(default_factory=lambda: TAPER)


def network_trust(network: np.ndarray, given: np.ndarray) -> float:
    """Weight in [0, 1] of the network's vote, from the IoU of its global-stage mask with the
    given mask (both bool, same grid): see TRUST_NONE / TRUST_FULL."""
    union = np.count_nonzero(network | given)
    iou = np.count_nonzero(network & given) / union if union else 1.0
    return float(np.clip((iou - TRUST_NONE) / (TRUST_FULL - TRUST_NONE), 0.0, 1.0))


def solve_boundary(rgb: np.ndarray, prob: np.ndarray, given: np.ndarray,
                   allowed: np.ndarray | None = None,
                   weights: SolveWeights | None = None, trust: float = 1.0) -> np.ndarray:
    """Final bool mask of one window.

    rgb: (h, w, 3) float32 in [0, 1]; prob: the network's probability (h, w); given: the
    user's mask (bool); allowed: the trust region (None: everywhere). Outside ``allowed`` the
    result is ``given`` exactly; elsewhere off the band it is the network's decision, weighed
    by ``trust`` against the given mask (``network_trust``).
    """
    import maxflow

    weights = weights or SolveWeights()
    given = np.asarray(given, bool)
    decision = (trust * prob + (1 - trust) * given) > 0.5
    if allowed is not None:
        decision = np.where(allowed, decision, given)
    band = _near_boundary(decision, weights.band) | _near_boundary(given, weights.band)
    if allowed is not None:
        band &= allowed
    if not band.any():
        return decision
    h, w = band.shape
    ys, xs = np.nonzero(band)
    n = len(ys)
    index = np.full(band.shape, -1, np.int64)
    index[ys, xs] = np.arange(n)
    img = np.asarray(rgb, np.float32)
    colour = img[ys, xs]

    pull = given_pull(img, given, weights, decision)[ys, xs]
    unary_base = trust * weights.net * _logit(prob[ys, xs]) + pull * np.where(given[ys, xs], 1.0, -1.0)

    # neighbours of every band pixel in all 8 directions; band–band pairs once (forward only)
    links = []  # (band node, neighbour node or -1, neighbour's decided label, pair weight)
    diffs = []
    for dy, dx, inv_dist in _PAIRS:
        for sign in (1, -1):
            ny, nx = ys + sign * dy, xs + sign * dx
            inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
            node = np.flatnonzero(inside)
            other = index[ny[node], nx[node]]
            keep = (other < 0) | (sign == 1)
            node, other = node[keep], other[keep]
            diffs.append(np.sum((colour[node] - img[ny[node], nx[node]]) ** 2, axis=-1))
            links.append((node, other, decision[ny[node], nx[node]], inv_dist))
    all_diffs = np.concatenate(diffs)
    mean_sq = float(all_diffs.mean()) if len(all_diffs) else 0.0
    beta = 1.0 / (2.0 * mean_sq) if mean_sq > 0 else 0.0
    pair_fg = np.zeros(n)  # what disagreeing with decided neighbours costs, per label
    pair_bg = np.zeros(n)
    edges = []
    for (node, other, label, inv_dist), diff in zip(links, diffs):
        wgt = weights.pairwise * inv_dist * np.exp(-beta * diff)
        pair = other >= 0
        edges.append((node[pair], other[pair], wgt[pair]))
        fixed_fg = ~pair & label
        fixed_bg = ~pair & ~label
        pair_fg += np.bincount(node[fixed_fg], wgt[fixed_fg], minlength=n)
        pair_bg += np.bincount(node[fixed_bg], wgt[fixed_bg], minlength=n)

    out = decision.copy()
    nodes = np.arange(n)
    for _ in range(max(1, weights.iterations)):
        unary = unary_base
        if weights.colour:  # colour models of the current labels around (and, later, in) the band
            unary = unary + weights.colour * _colour_log_ratio(img, band, out, colour)
        graph = maxflow.Graph[float](n, 4 * n)
        graph.add_nodes(n)
        for a, b, wgt in edges:
            graph.add_edges(a, b, wgt, wgt)
        # cost of labelling a pixel background is its source edge, foreground its sink edge
        graph.add_grid_tedges(nodes, np.maximum(unary, 0) + pair_fg, np.maximum(-unary, 0) + pair_bg)
        graph.maxflow()
        out[ys, xs] = ~graph.get_grid_segments(nodes)  # segments: True on the sink (bg) side
    return out


def given_pull(img: np.ndarray, given: np.ndarray, weights: SolveWeights,
               proposal: np.ndarray | None = None) -> np.ndarray:
    """Per pixel, how strongly the cut keeps the given label (log-odds units, 0..``given``).

    Scaled by ``edge_support`` (with weight ``weights.edge``) and faded with the distance to
    the given boundary (``weights.taper``); with neither it is ``weights.given`` everywhere.
    Depends on pixels at most EDGE_RADIUS + 2·band away, so windows with a halo agree."""
    pull = np.full(given.shape, float(weights.given))
    if not weights.edge and weights.taper is None:
        return pull
    rival = proposal if EDGE_RIVAL == "network" else None
    grad = _gradient_magnitude(img) if weights.edge or TAPER_GATE else None
    if weights.edge:
        pull *= (1.0 - weights.edge) + weights.edge * _edge_support(grad, given, weights.band, rival)
    if weights.taper is not None:
        u8 = np.ascontiguousarray(given, dtype=np.uint8)
        dist = np.where(given, cv2.distanceTransform(u8, cv2.DIST_L2, cv2.DIST_MASK_PRECISE),
                        cv2.distanceTransform(1 - u8, cv2.DIST_L2, cv2.DIST_MASK_PRECISE))
        fade = np.clip((weights.taper + 1.0 - dist) / max(weights.taper, 1e-6), 0.0, 1.0)
        if TAPER_GATE:
            reach = weights.band + int(math.ceil(weights.taper)) + 1
            on_edge = _edge_support(grad, given, reach, rival)
            fade = on_edge + (1.0 - on_edge) * fade
        pull *= fade
    return pull


def edge_support(img: np.ndarray, given: np.ndarray, spread: int,
                 proposal: np.ndarray | None = None) -> np.ndarray:
    """Per pixel in [0, 1]: how well the given boundary near it lies on the image's edge.

    The colour gradient magnitude averaged over the given boundary's pixels (both sides of it)
    within ``spread`` of each pixel, divided by the larger of itself and the same average over
    the boundary of ``proposal`` (the network's decision) — or, with no proposal, over the
    strongest gradient within EDGE_RADIUS. Both are raised by EDGE_FLOOR, so a boundary in flat
    colour (no reason to move it) scores 1; so does a pixel with no given boundary near it."""
    return _edge_support(_gradient_magnitude(img), given, spread, proposal)


def _edge_support(grad: np.ndarray, given: np.ndarray, spread: int,
                  proposal: np.ndarray | None) -> np.ndarray:
    """``edge_support`` from the image's gradient magnitude (computed once per window)."""
    given_edge, given_count = _boundary_mean(grad, given, spread)
    if proposal is None:
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * EDGE_RADIUS + 1,) * 2)
        rival, rival_count = _boundary_mean(cv2.dilate(grad, disc), given, spread)
    else:
        rival, rival_count = _boundary_mean(grad, proposal, spread)
    rival = np.where(rival_count > 0.5, np.maximum(rival, given_edge), given_edge)
    return np.where(given_count > 0.5, (given_edge + EDGE_FLOOR) / (rival + EDGE_FLOOR), 1.0)


def _gradient_magnitude(img: np.ndarray) -> np.ndarray:
    """Colour gradient magnitude (Sobel of a σ = 1 blur, per unit of intensity per pixel)."""
    smooth = cv2.GaussianBlur(np.asarray(img, np.float32), (0, 0), 1.0)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    sq = gx ** 2 + gy ** 2
    return np.sqrt(sq.sum(axis=-1) if sq.ndim == 3 else sq)


def _boundary_mean(values: np.ndarray, mask: np.ndarray, spread: int):
    """Mean of ``values`` over ``mask``'s boundary pixels within ``spread`` (chessboard) of
    each pixel, and how many there are."""
    boundary = _near_boundary(mask, 1).astype(np.float32)
    box = (2 * spread + 1,) * 2
    total = cv2.boxFilter(values * boundary, -1, box, normalize=False, borderType=cv2.BORDER_CONSTANT)
    count = cv2.boxFilter(boundary, -1, box, normalize=False, borderType=cv2.BORDER_CONSTANT)
    return total / np.maximum(count, 1e-6), count


def _near_boundary(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` (chessboard) of a pixel of the other label."""
    u8 = mask.astype(np.uint8)
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(u8, kernel) != cv2.erode(u8, kernel)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
    return np.clip(np.log(p / (1 - p)), -LOGIT_CLIP, LOGIT_CLIP)


def _colour_log_ratio(img: np.ndarray, band: np.ndarray, decision: np.ndarray,
                      band_colour: np.ndarray) -> np.ndarray:
    """log P(colour | fg) / P(colour | bg) of the band pixels, from histograms of the labelled
    pixels in and around the band (Laplace-smoothed; zero when a side has too few pixels)."""
    ring = cv2.dilate(band.astype(np.uint8), np.ones((2 * COLOUR_RING + 1,) * 2, np.uint8)) > 0
    ry, rx = np.nonzero(ring)
    ring_code = _colour_code(img[ry, rx])
    ring_fg = decision[ry, rx]
    cells = COLOUR_BINS ** 3
    fg = np.bincount(ring_code[ring_fg], minlength=cells).astype(np.float64)
    bg = np.bincount(ring_code[~ring_fg], minlength=cells).astype(np.float64)
    if fg.sum() < 20 or bg.sum() < 20:
        return np.zeros(len(band_colour))
    ratio = np.log((fg + 1) / (fg.sum() + cells)) - np.log((bg + 1) / (bg.sum() + cells))
    return np.clip(ratio, -LOGIT_CLIP, LOGIT_CLIP)[_colour_code(band_colour)]


def _colour_code(colour: np.ndarray) -> np.ndarray:
    q = np.clip((colour * COLOUR_BINS).astype(np.int64), 0, COLOUR_BINS - 1)
    return (q[:, 0] * COLOUR_BINS + q[:, 1]) * COLOUR_BINS + q[:, 2]
