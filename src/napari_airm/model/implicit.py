"""Implicit decoding f with LIIF's local ensemble (paper eq. 2 / 5).

A query at continuous coordinate q (normalised to [-1, 1] over the encoded frame, (y, x)
order) asks its 4 nearest feature cells p; the MLP f takes [z_p, p−q, cell, coarse(q), guide(q)]
and returns a logit; the 4 answers are blended with LIIF's area weights (the area of the
diagonally opposite cell over the total). Queries are any set of coordinates at any
resolution, so tiles and boundary bands decode exactly like the full image.

The first MLP layer is linear in its input, so its z-part is applied once per feature *cell*
(not once per query and neighbour) and then gathered: identical result, far fewer FLOPs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .hypernet import ImplicitWeights

SHIFTS = ((-1, -1), (-1, 1), (1, -1), (1, 1))
COARSE_EPS = 0.02


def coarse_logit(coarse: torch.Tensor) -> torch.Tensor:
    """Logit of a [0, 1] mask, clamped so that a binary mask gives ±3.9."""
    c = coarse.clamp(COARSE_EPS, 1 - COARSE_EPS)
    return torch.log(c) - torch.log1p(-c)


def pixel_centers(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised (y, x) centres of an H×W pixel grid, shape (H*W, 2)."""
    ys = (torch.arange(height, device=device, dtype=dtype) * 2 + 1) / height - 1
    xs = (torch.arange(width, device=device, dtype=dtype) * 2 + 1) / width - 1
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(-1, 2)


def first_layer_cells(weights: ImplicitWeights, feat: torch.Tensor) -> torch.Tensor:
    """The z-part of the first MLP layer applied to every feature cell: (B, h*w, C), contiguous.

    Computed once per encoded frame (``Encoded`` caches it) and gathered per query.
    """
    D = feat.shape[1]
    Wz = weights.weights[0][:, :, :D]
    return torch.einsum("bod,bdn->bno", Wz, feat.flatten(2)).contiguous()


def query_features(cells: torch.Tensor, grid: tuple[int, int], coords: torch.Tensor):
    """Gather the first-layer terms of the 4 neighbour cells of every query.

    cells: (B, h*w, C) from ``first_layer_cells``; coords: (B, Q, 2).
    Returns (gathered (B, 4, Q, C), rel (B, 4, Q, 2), blend weights (B, 4, Q)).
    """
    B, _, C = cells.shape
    h, w = grid
    Q = coords.shape[1]
    size = coords.new_tensor([h, w])
    half_cell = 1.0 / size  # half of a cell's width (2/h) in normalised units
    training = torch.is_grad_enabled()
    # under autograd, pieces joined by ``stack`` (whose backward is a view per piece): writing
    # them into slices of one tensor makes autograd copy the whole (B, 4, Q, C) gradient per slice
    gathered = [] if training else cells.new_empty(B, 4, Q, C)
    rels, areas = [], []
    for k, (vy, vx) in enumerate(SHIFTS):
        shifted = coords + coords.new_tensor([vy, vx]) * half_cell + 1e-6
        idx = torch.floor((shifted + 1) / 2 * size).long()
        idx[..., 0].clamp_(0, h - 1)
        idx[..., 1].clamp_(0, w - 1)
        center = (idx.to(coords.dtype) * 2 + 1) / size - 1
        rel = (coords - center) * size / 2  # in feature-cell units
        rels.append(rel)
        areas.append((rel[..., 0] * rel[..., 1]).abs() + 1e-9)
        lin = idx[..., 0] * w + idx[..., 1]
        if training:  # autograd cannot record out=
            gathered.append(torch.gather(cells, 1, lin.unsqueeze(-1).expand(-1, -1, C)))
        else:
            for b in range(B):
                torch.index_select(cells[b], 0, lin[b], out=gathered[b, k])
    if training:
        gathered = torch.stack(gathered, dim=1)
    rels, areas = torch.stack(rels, dim=1), torch.stack(areas, dim=1)
    blend = areas.flip(1) / areas.sum(1, keepdim=True)  # opposite cell's area (3 - k)
    return gathered, rels, blend


def decode_queries(weights: ImplicitWeights, feat: torch.Tensor, coords: torch.Tensor,
                   cell: torch.Tensor, point: torch.Tensor, coarse: torch.Tensor,
                   residual: bool = True, cells: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of the implicit MLP at ``coords``.

    feat (B, D, h, w); coords (B, Q, 2); cell (B, Q, 2) or (B, 1, 2): query pixel size in
    feature-cell units; point (B, Q, P): per-query inputs (coarse value, guide features);
    coarse (B, Q) in [0, 1] (the residual base); cells: ``first_layer_cells`` if cached.
    Returns (B, Q).
    """
    if coords.shape[1] == 0:
        return coords.new_zeros(coords.shape[:2])
    W1, b1 = weights.weights[0], weights.biases[0]
    D = feat.shape[1]
    Wrel, Wcell, Wpoint = W1[:, :, D:D + 2], W1[:, :, D + 2:D + 4], W1[:, :, D + 4:]
    if cells is None:
        cells = first_layer_cells(weights, feat)
    h, rel, blend = query_features(cells, feat.shape[-2:], coords)  # (B,4,Q,C) (B,4,Q,2) (B,4,Q)
    B, K, Q, C = h.shape
    shared = torch.baddbmm(b1.unsqueeze(1), point, Wpoint.transpose(1, 2))
    # in-place ops are outside autocast: their operands must already have the result's dtype
    # (half on CUDA under autocast; a no-op in float32)
    shared.baddbmm_(cell.expand(-1, Q, -1).to(shared.dtype), Wcell.transpose(1, 2).to(shared.dtype))
    h += shared.unsqueeze(1)
    h = h.view(B, K * Q, C)
    rel_term = rel.view(B, K * Q, 2).to(h.dtype), Wrel.transpose(1, 2).to(h.dtype)
    if torch.is_grad_enabled():  # in place on a view, autograd would copy the whole gradient
        h = torch.baddbmm(h, *rel_term)
    else:  # inference keeps one (B, 4Q, C) buffer
        h.baddbmm_(*rel_term)
    h.relu_()
    n_layers = len(weights.weights)
    for layer in range(1, n_layers):
        W, b = weights.weights[layer], weights.biases[layer]
        h = torch.baddbmm(b.unsqueeze(1), h, W.transpose(1, 2))
        if layer < n_layers - 1:
            h.relu_()
    out = (h.view(B, K, Q) * blend).sum(1)
    if residual:
        out = out + coarse_logit(coarse)
    return out
