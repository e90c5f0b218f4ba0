"""Training losses (paper eq. 7 and 11) with the paper's weights as defaults."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .model.affinity import affinity_loss

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


@dataclass
class LossWeights:
    l1: float = 0.2
    l2: float = 0.2
    bce: float = 0.3
    grad: float = 0.4
    #: L = airmf * L_AIRMF + aff * L_aff (paper: ½ and ½)
    airmf: float = 0.5
    aff: float = 0.5
    #: extra weight of pixels within ``boundary_radius`` of the GT boundary in L1/L2/BCE
    #: (0 = the paper's unweighted means); DESIGN §2.7 allows it where it helps mBA
    boundary: float = 0.0
    boundary_radius: int = 3
    #: extra weight of those boundary-band pixels where the coarse mask already agrees with the
    #: GT: moving a correct boundary costs more than leaving a wrong one (issue 13)
    keep: float = 0.0


def boundary_weights(gt: torch.Tensor, radius: int, extra: float, coarse: torch.Tensor | None = None,
                     keep: float = 0.0) -> torch.Tensor:
    """1 + extra inside the GT boundary band of ``radius`` pixels (morphological gradient),
    + keep where, in that band, the coarse mask (thresholded at ½) already equals the GT."""
    k = 2 * radius + 1
    dil = F.max_pool2d(gt, k, 1, radius)
    ero = -F.max_pool2d(-gt, k, 1, radius)
    band = dil - ero
    weight = 1 + extra * band
    if keep and coarse is not None:
        weight = weight + keep * band * ((coarse > 0.5).to(gt) == gt).to(gt)
    return weight


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude of (B, 1, H, W) maps with 3×3 Sobel filters (replicate padding)."""
    kx = _SOBEL_X.to(x)
    kernel = torch.stack([kx, kx.t()]).unsqueeze(1)
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel)
    return torch.sqrt((g ** 2).sum(1, keepdim=True) + 1e-8)


def gradient_loss(prob: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """L1 between Sobel gradient magnitudes of prediction and ground truth."""
    return (sobel_magnitude(prob) - sobel_magnitude(gt)).abs().mean()


def airmf_loss(logits: torch.Tensor, gt: torch.Tensor, w: LossWeights = LossWeights(),
               coarse: torch.Tensor | None = None):
    """Dense decoder loss on (B, 1, H, W) logits; returns (total, parts dict). ``coarse``: the
    coarse mask on the same grid (only the ``keep`` weighting reads it)."""
    if logits.shape != gt.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(gt.shape)} differ")
    prob = torch.sigmoid(logits)
    if w.boundary or w.keep:
        weight = boundary_weights(gt, w.boundary_radius, w.boundary, coarse, w.keep)
        mean = lambda x: (x * weight).sum() / weight.sum()  # noqa: E731
    else:
        weight, mean = None, torch.mean
    parts = {
        "l1": mean((prob - gt).abs()),
        "l2": mean((prob - gt) ** 2),
        "bce": mean(F.binary_cross_entropy_with_logits(logits, gt, reduction="none")),
        "grad": gradient_loss(prob, gt),
    }
    total = w.l1 * parts["l1"] + w.l2 * parts["l2"] + w.bce * parts["bce"] + w.grad * parts["grad"]
    return total, parts


def total_loss(logits: torch.Tensor, gt: torch.Tensor, aff_logits: torch.Tensor | None = None,
               aff_gt: torch.Tensor | None = None, grid: tuple[int, int] | None = None,
               radius: float = 14, w: LossWeights = LossWeights(),
               coarse: torch.Tensor | None = None):
    """L = ½·L_AIRMF + ½·L_aff (L_aff only when affinity logits are given)."""
    l_airmf, parts = airmf_loss(logits, gt, w, coarse)
    parts = {k: v.detach() for k, v in parts.items()}
    parts["airmf"] = l_airmf.detach()
    total = w.airmf * l_airmf
    if aff_logits is not None:
        l_aff = affinity_loss(aff_logits, aff_gt, grid, radius)
        parts["aff"] = l_aff.detach()
        total = total + w.aff * l_aff
    parts["total"] = total.detach()
    return total, parts
