"""Refinement of one small frame in a single dense pass (training validation uses it)."""
from __future__ import annotations

import numpy as np
import torch

from ..model.airm import AIRM
from .source import ImageSource


@torch.no_grad()
def refine_whole(model: AIRM, image: np.ndarray, coarse: np.ndarray, device=None) -> np.ndarray:
    """Probability map (H, W) float32 from one encode + dense decode of the whole frame.

    The image is normalised exactly as the tiled engine reads it (``ImageSource``).
    """
    device = device or next(model.parameters()).device
    source = ImageSource.wrap(image)
    rgb = torch.from_numpy(source.read((0, source.height, 0, source.width)))
    rgb = rgb.permute(2, 0, 1).unsqueeze(0).to(device)
    mask = torch.from_numpy(np.asarray(coarse, dtype=np.float32)).clamp_(0, 1)[None, None].to(device)
    return model.refine_frame(rgb, mask)[0, 0].float().cpu().numpy()
