"""One training forward pass: random encode scale, boundary-centred decode window, losses.

Resolution independence (CRM, DESIGN §2.7): the crop is encoded at a random lower scale and
decoded at the crop's full resolution, so the decoder learns to upsample. The decoder reads the
coarse mask as the encoder saw it, bilinearly upsampled (what the inference cascade feeds it).
Decoding is dense over a window per sample, centred on the ground-truth boundary most of the
time: that is where the loss lives, and the Sobel term needs a dense patch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses import LossWeights, total_loss
from ..model.airm import AIRM, normalise, resize
from ..model.implicit import pixel_centers


def _encode_size(size: int, scale: float, multiple: int = 32) -> int:
    return max(multiple * 2, int(round(size * scale / multiple)) * multiple)


def boundary_windows(gt: torch.Tensor, window: int, boundary_share: float,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Top-left corners (B, 2) of decode windows, centred on a GT boundary pixel with
    probability ``boundary_share`` (else uniform)."""
    B, _, H, W = gt.shape
    dil = F.max_pool2d(gt, 3, 1, 1)
    ero = -F.max_pool2d(-gt, 3, 1, 1)
    edge = (dil - ero).flatten(1) > 0.5
    corners = torch.empty(B, 2, dtype=torch.long)
    for b in range(B):
        use_edge = bool(edge[b].any()) and torch.rand(1, generator=generator).item() < boundary_share
        if use_edge:
            idx = torch.nonzero(edge[b]).flatten()
            pick = idx[torch.randint(len(idx), (1,), generator=generator)].item()
            cy, cx = divmod(pick, W)
        else:
            cy = torch.randint(H, (1,), generator=generator).item()
            cx = torch.randint(W, (1,), generator=generator).item()
        corners[b, 0] = min(max(cy - window // 2, 0), H - window)
        corners[b, 1] = min(max(cx - window // 2, 0), W - window)
    return corners


def _gather_windows(x: torch.Tensor, corners: torch.Tensor, window: int) -> torch.Tensor:
    return torch.stack([x[b, :, y:y + window, xx:xx + window]
                        for b, (y, xx) in enumerate(corners.tolist())])


def window_point_features(model: AIRM, rgb: torch.Tensor, coarse: torch.Tensor,
                          corners: torch.Tensor, window: int) -> torch.Tensor:
    """``point_features`` of the crop, (B, window², P), with the guide computed on each window
    plus its halo only (``Guide.region``): the dense crop's values at a fraction of the
    full-resolution convolutions."""
    parts = [_gather_windows(coarse * 2 - 1, corners, window)]
    if model.guide is not None:
        x = normalise(rgb, coarse)
        parts.append(torch.cat([model.guide.region(x[b:b + 1], y, y + window, xx, xx + window)
                                for b, (y, xx) in enumerate(corners.tolist())]))
    return torch.cat(parts, dim=1).flatten(2).transpose(1, 2)


def training_forward(model: AIRM, rgb: torch.Tensor, coarse: torch.Tensor, gt: torch.Tensor, *,
                     encode_scale: float = 1.0, window: int | None = 112,
                     boundary_share: float = 0.75, weights: LossWeights = LossWeights(),
                     generator: torch.Generator | None = None):
    """Loss of a batch (B,3,S,S) RGB, (B,1,S,S) coarse and GT in [0,1]; returns (loss, parts)."""
    B, _, H, W = rgb.shape
    eh, ew = _encode_size(H, encode_scale), _encode_size(W, encode_scale)
    rgb_e = resize(rgb, (eh, ew), "area")
    coarse_e = resize(coarse, (eh, ew), "area")
    coarse_q = resize(coarse_e, (H, W), "bilinear").clamp(0, 1)
    want_pairs = model.affinity is not None
    enc = model.encode(rgb_e, coarse_e, want_pairs=want_pairs)

    if window is None or window >= min(H, W):
        corners = torch.zeros(B, 2, dtype=torch.long)
        wh, ww = H, W
        point_q = model.point_features(rgb, coarse_q).flatten(2).transpose(1, 2)
    else:
        corners = boundary_windows(gt, window, boundary_share, generator)
        wh = ww = window
        point_q = window_point_features(model, rgb, coarse_q, corners, window)
    grid = pixel_centers(H, W, device=rgb.device, dtype=rgb.dtype).reshape(H, W, 2).permute(2, 0, 1)
    coords = _gather_windows(grid.expand(B, -1, -1, -1), corners, wh).flatten(2).transpose(1, 2)
    coarse_w = _gather_windows(coarse_q, corners, wh)
    gt_w = _gather_windows(gt, corners, wh)
    logits = model.decode(enc, coords, (H, W), point_q, coarse_w.flatten(1)).reshape(B, 1, wh, ww)

    aff_logits = model.affinity(enc.pairs) if want_pairs else None
    loss, parts = total_loss(logits, gt_w, aff_logits, gt, enc.pair_grid,
                             model.cfg.affinity_radius, weights, coarse_w)
    return loss, parts
