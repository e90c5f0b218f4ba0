"""Refinement of one frame that fits in memory: the unit every engine path is built from."""
from __future__ import annotations

import numpy as np
import torch

from ..model.airm import AIRM


def image_to_tensor(image: np.ndarray, device) -> torch.Tensor:
    """(H, W, 3) uint8/uint16/float RGB → (1, 3, H, W) float in [0, 1]."""
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        t = torch.from_numpy(np.ascontiguousarray(arr)).float().div_(255)
    elif arr.dtype == np.uint16:
        t = torch.from_numpy(arr.astype(np.float32) / 65535)
    else:
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).clamp_(0, 1)
    return t.permute(2, 0, 1).unsqueeze(0).to(device)


def mask_to_tensor(mask: np.ndarray, device) -> torch.Tensor:
    """(H, W) bool / probability → (1, 1, H, W) float in [0, 1]."""
    arr = np.asarray(mask)
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    return t.clamp_(0, 1)[None, None].to(device)


@torch.no_grad()
def refine_whole(model: AIRM, image: np.ndarray, coarse: np.ndarray, device=None) -> np.ndarray:
    """Probability map (H, W) float32 from one encode + dense decode of the whole frame."""
    device = device or next(model.parameters()).device
    rgb, mask = image_to_tensor(image, device), mask_to_tensor(coarse, device)
    return model.refine_frame(rgb, mask)[0, 0].float().cpu().numpy()
