"""Edge snapping: a colour guided filter (He, Sun & Tang, 2013) of the refined probabilities.

The network places a boundary as a soft ramp a few pixels wide, often a pixel or two off the
image's edge; the guided filter makes the probability locally an affine function of the colour,
so a 0.5 crossing within about a pixel of an edge moves onto it. Two gates keep the rest as the
network made it: pixels it is sure of (``SNAP_CONFIDENT``), and pixels whose window sees a
colour ramp rather than a step (``SNAP_SHARPNESS``: upscaled or defocused images). Applied to
full-resolution decodes only; it reads ``2 · radius`` pixels around each output pixel, far less
than a tile's context.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Chosen on the first 100 DUTS val images with the stage-4 model (docs/performance.md, "Edge
# snapping"): radius 1-3 and eps 1e-4-1e-3 all gained; larger eps or radius lost mBA.
SNAP_RADIUS = 2
SNAP_EPS = 1e-3
# Pixels the network is sure of (probability below this or above 1 minus it) keep their value:
# only a boundary's soft ramp moves. Without this gate, the filter's smoothing in flat regions
# rounds small and thin confident shapes (the microscopy image: -0.9 mBA; with it: -0.05).
SNAP_CONFIDENT = 0.25
# Only where the image has a step, not a ramp: the colour variance of the (2r-1)² window must be
# over this share of the (2r+1)² window's (a step through a pixel keeps ~0.9 of it, a linear ramp
# ~0.33). Upscaled images have ramps a few pixels wide, and snapping them lost 0.56 mBA (×4).
SNAP_SHARPNESS = 0.4
SNAP_BLOCK = 32  # pixels a side of the blocks the filter is computed on (those with a boundary)
SNAP_BATCH = 256  # blocks filtered at once: bounds the temporaries (~60 MB)


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over the (2r+1)² window clipped at the frame (each output from its own window, so a
    crop with ``2 · radius`` pixels of context gives exactly the values of the whole frame)."""
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


def snap_to_edges(prob: torch.Tensor, rgb: torch.Tensor, radius: int = SNAP_RADIUS,
                  eps: float = SNAP_EPS, confident: float = SNAP_CONFIDENT,
                  sharpness: float = SNAP_SHARPNESS) -> torch.Tensor:
    """Guided filter of ``prob`` (1,1,H,W) by ``rgb`` (1,3,H,W) in [0, 1]; returns (1,1,H,W) in
    [0, 1]. ``eps`` is the colour variance below which an edge is treated as noise; pixels
    with a probability within ``confident`` of 0 or 1, and pixels where the image's edge is a
    ramp rather than a step (``sharpness``; 0 turns this gate off), are returned unchanged.

    Computed only on the ``SNAP_BLOCK``-pixel blocks that hold uncertain pixels, each with
    ``2 · radius`` pixels of context clipped at the frame: exactly the values of the filter
    over the whole frame, at a cost that follows the boundary's length, not the frame's area.
    """
    p = prob.float()
    uncertain = (p > confident) & (p < 1 - confident)
    if not bool(uncertain.any()):
        return prob
    H, W = p.shape[-2:]
    n, h = SNAP_BLOCK, 2 * radius
    frame = torch.cat([rgb.float(), p], 1)
    out = p.clone()
    inner = []  # blocks of full size with full context: filtered together, in batches
    for by, bx in F.max_pool2d(uncertain.float(), n, ceil_mode=True)[0, 0].nonzero().tolist():
        y0, x0 = by * n, bx * n
        y1, x1 = min(y0 + n, H), min(x0 + n, W)
        if y0 >= h and x0 >= h and y1 + h <= H and x1 + h <= W and (y1 - y0, x1 - x0) == (n, n):
            inner.append((y0, x0))
            continue
        a0, b0 = max(y0 - h, 0), max(x0 - h, 0)
        region = frame[:, :, a0:min(y1 + h, H), b0:min(x1 + h, W)]
        q = guided_filter(region[:, 3:], region[:, :3], radius, eps, sharpness)
        out[..., y0:y1, x0:x1] = q[..., y0 - a0:y1 - a0, x0 - b0:x1 - b0]
    for k in range(0, len(inner), SNAP_BATCH):
        at = inner[k:k + SNAP_BATCH]
        batch = torch.stack([frame[0, :, y0 - h:y0 + n + h, x0 - h:x0 + n + h] for y0, x0 in at])
        q = guided_filter(batch[:, 3:], batch[:, :3], radius, eps, sharpness)[..., h:h + n, h:h + n]
        for (y0, x0), block in zip(at, q):
            out[0, :, y0:y0 + n, x0:x0 + n] = block
    return torch.where(uncertain, out.clamp_(0, 1), p).to(prob.dtype)


def guided_filter(p: torch.Tensor, I: torch.Tensor, radius: int, eps: float,
                  sharpness: float = 0.0) -> torch.Tensor:
    """The colour guided filter of (N,1,H,W) ``p`` by (N,3,H,W) ``I`` over whole frames; where
    ``_edge_sharpness`` is not above ``sharpness``, ``p`` itself."""
    mean_i = _box(I, radius)                              # (N,3,H,W)
    mean_p = _box(p, radius)                              # (N,1,H,W)
    cov_ip = _box(I * p, radius) - mean_i * mean_p        # (N,3,H,W)
    pairs = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
    products = torch.cat([I[:, i:i + 1] * I[:, j:j + 1] for i, j in pairs], 1)
    var = _box(products, radius) - torch.cat([mean_i[:, i:i + 1] * mean_i[:, j:j + 1]
                                              for i, j in pairs], 1)
    rr, rg, rb, gg, gb, bb = var.unbind(1)
    spread = rr + gg + bb  # colour variance of the window, for the sharpness gate
    rr, gg, bb = rr + eps, gg + eps, bb + eps
    # inverse of the symmetric 3×3 colour covariance per pixel, by its adjugate
    inv = (gg * bb - gb * gb, gb * rb - rg * bb, rg * gb - gg * rb,
           rr * bb - rb * rb, rg * rb - rr * gb, rr * gg - rg * rg)
    det = rr * inv[0] + rg * inv[1] + rb * inv[2]
    i_rr, i_rg, i_rb, i_gg, i_gb, i_bb = (v / det for v in inv)
    c_r, c_g, c_b = cov_ip.unbind(1)
    a = torch.stack([i_rr * c_r + i_rg * c_g + i_rb * c_b,
                     i_rg * c_r + i_gg * c_g + i_gb * c_b,
                     i_rb * c_r + i_gb * c_g + i_bb * c_b], 1)   # (N,3,H,W)
    b = mean_p - (a * mean_i).sum(1, keepdim=True)
    q = (_box(a, radius) * I).sum(1, keepdim=True) + _box(b, radius)
    if sharpness > 0:
        q = torch.where(_edge_sharpness(I, radius, spread) > sharpness, q, p)
    return q


def _edge_sharpness(I: torch.Tensor, radius: int, outer: torch.Tensor) -> torch.Tensor:
    """(N,1,H,W): colour variance of the (2r-1)² window over ``outer``, that of the (2r+1)²
    window (N,H,W); near 1 for a step edge or noise, about 1/3 for a linear ramp at r = 2."""
    r = max(radius - 1, 1)
    mean = _box(I, r)
    inner = (_box(I * I, r) - mean * mean).sum(1)
    return (inner / (outer + 1e-6)).unsqueeze(1)
