"""Hypernetwork ψ (AIRMF, paper eq. 5–6): per-image weights of the implicit MLP.

ψ sees the whole feature map F (Conv+ReLU+BatchNorm layers, global pooling, one linear layer)
and emits, for every layer l of the implicit MLP, low-rank factors A^l (n_out×r), B^l (r×n_in)
and a bias. ``ImplicitWeights`` is the per-sample result, computed once per image and then
applied to every query with batched matrix products.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ImplicitWeights:
    """Weights of the implicit MLP for a batch: per layer W (B, n_out, n_in) and b (B, n_out).

    For the shared-MLP ablation (SIRMF) the batch dimension is a broadcast view (size 1 data).
    """

    weights: list[torch.Tensor]
    biases: list[torch.Tensor]

    def select(self, index: int | slice) -> "ImplicitWeights":
        """Weights of some samples, e.g. one image's weights to reuse for all its tiles."""
        sl = slice(index, index + 1) if isinstance(index, int) else index
        return ImplicitWeights([w[sl] for w in self.weights], [b[sl] for b in self.biases])

    def expand(self, batch: int) -> "ImplicitWeights":
        return ImplicitWeights([w.expand(batch, -1, -1) for w in self.weights],
                               [b.expand(batch, -1) for b in self.biases])

    def to(self, device=None, dtype=None) -> "ImplicitWeights":
        return ImplicitWeights([w.to(device=device, dtype=dtype) for w in self.weights],
                               [b.to(device=device, dtype=dtype) for b in self.biases])


class SharedMLPWeights(nn.Module):
    """The learned shared weights W_shared, b_shared of every implicit-MLP layer."""

    def __init__(self, dims: list[int]):
        super().__init__()
        self.dims = dims
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, (n_in, n_out) in enumerate(zip(dims[:-1], dims[1:])):
            w = torch.empty(n_out, n_in)
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            if i == len(dims) - 2:  # last layer starts near zero: a residual model starts at its input
                nn.init.normal_(w, std=1e-3)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(n_out)))

    def as_batch(self, batch: int) -> ImplicitWeights:
        return ImplicitWeights([w.unsqueeze(0) for w in self.weights],
                               [b.unsqueeze(0) for b in self.biases]).expand(batch)


class HyperNetwork(nn.Module):
    """ψ: F → per-image low-rank (modulation of the) implicit-MLP weights."""

    def __init__(self, feat_dim: int, dims: list[int], rank: int = 20, channels: int = 64,
                 layers: int = 2, modulation: str = "multiplicative"):
        super().__init__()
        self.dims, self.rank, self.modulation = dims, rank, modulation
        convs: list[nn.Module] = []
        c_in = feat_dim
        for _ in range(layers):
            convs += [nn.Conv2d(c_in, channels, 3, stride=2, padding=1), nn.ReLU(inplace=True),
                      nn.BatchNorm2d(channels)]
            c_in = channels
        self.convs = nn.Sequential(*convs)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.layout = [(n_out * rank, rank * n_in, n_out) for n_in, n_out in zip(dims[:-1], dims[1:])]
        total = sum(sum(t) for t in self.layout)
        self.head = nn.Linear(channels, total)
        self._init_head()

    def _init_head(self) -> None:
        """Start from a sensible operating point.

        multiplicative: A random, B = 0 → modulation 2σ(0) = 1, i.e. the shared MLP.
        lowrank: A, B random with Kaiming-like product scale, small input dependence.
        """
        nn.init.normal_(self.head.weight, std=1e-3)
        bias = torch.zeros_like(self.head.bias)
        offset = 0
        last = len(self.layout) - 1
        for layer, (n_in, (na, nb, nbias)) in enumerate(zip(self.dims[:-1], self.layout)):
            if self.modulation == "multiplicative":
                bias[offset: offset + na].normal_(std=1.0)
            else:
                sigma = (2.0 / n_in) ** 0.25 * (0.1 if layer == last else 1.0)
                bias[offset: offset + na + nb].normal_(std=sigma)
            offset += na + nb + nbias
        with torch.no_grad():
            self.head.bias.copy_(bias)

    def forward(self, feat: torch.Tensor, shared: SharedMLPWeights | None) -> ImplicitWeights:
        code = self.head(self.pool(self.convs(feat)).flatten(1))
        B = code.shape[0]
        weights, biases = [], []
        offset = 0
        for layer, ((n_in, n_out), (na, nb, nbias)) in enumerate(
                zip(zip(self.dims[:-1], self.dims[1:]), self.layout)):
            A = code[:, offset: offset + na].reshape(B, n_out, self.rank)
            Bm = code[:, offset + na: offset + na + nb].reshape(B, self.rank, n_in)
            b = code[:, offset + na + nb: offset + na + nb + nbias]
            offset += na + nb + nbias
            low_rank = (A @ Bm) / math.sqrt(self.rank)
            if self.modulation == "multiplicative":
                assert shared is not None
                weights.append(shared.weights[layer] * 2 * torch.sigmoid(low_rank))
                biases.append(shared.biases[layer] + b)
            else:
                weights.append(low_rank)
                biases.append(b)
        return ImplicitWeights(weights, biases)
