"""Affinity head φ and the affinity-from-attention loss (paper eq. 4, 8–10).

Training only: it shapes the encoder so that cells of one object attend to each other.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AffinityHead(nn.Module):
    """Aff_pre = sigmoid(MLP over heads (ATT + ATTᵀ)); returns logits (B, N, N)."""

    def __init__(self, heads: int, hidden: int = 16):
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(heads, hidden, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, 1, 1))

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        sym = pairs + pairs.transpose(-1, -2)
        return self.mlp(sym)[:, 0]


def _grid_offsets(h: int, w: int, device) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device),
                            indexing="ij")
    pos = torch.stack([ys.reshape(-1), xs.reshape(-1)], dim=1).float()
    return torch.cdist(pos, pos)


def affinity_targets(gt: torch.Tensor, grid: tuple[int, int], radius: float):
    """Ground-truth affinity on the last stage's grid.

    gt: (B, 1, H, W) in [0, 1]. Returns (labels (B, N, N) bool, valid (N, N) bool): a pair is
    positive when both cells have the same class, and counts only within ``radius`` cells.
    """
    h, w = grid
    cells = F.interpolate(gt.float(), size=(h, w), mode="area")[:, 0] > 0.5
    flat = cells.reshape(gt.shape[0], -1)
    labels = flat[:, :, None] == flat[:, None, :]
    dist = _grid_offsets(h, w, gt.device)
    valid = (dist <= radius) & (dist > 0)
    return labels, valid


def affinity_loss(logits: torch.Tensor, gt: torch.Tensor, grid: tuple[int, int],
                  radius: float = 14) -> torch.Tensor:
    """L_aff = mean -log(1-Aff) over negative pairs + mean -log(Aff) over positive pairs.

    Each term is normalised by its own pair count over the batch; an empty set contributes 0.
    """
    labels, valid = affinity_targets(gt, grid, radius)
    valid = valid.unsqueeze(0).expand_as(labels)
    pos = labels & valid
    neg = (~labels) & valid
    loss = logits.new_zeros(())
    if pos.any():
        loss = loss + F.softplus(-logits[pos]).mean()
    if neg.any():
        loss = loss + F.softplus(logits[neg]).mean()
    return loss
