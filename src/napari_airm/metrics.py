"""IoU and mean Boundary Accuracy (mBA) exactly as the field computes them (CascadePSP).

* IoU of a dataset = total intersection / total union (per-image IoU for reports).
* mBA of one image: for 5 radii r_i = 1 + int(((H+W)/300 − 1)/5 · i) the boundary region is the
  morphological gradient of GT with OpenCV's elliptical (2r+1)² kernel; accuracy = share of
  region pixels where prediction equals GT (an empty region counts as 1); mBA = mean over
  radii, then over images.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

N_RADII = 5


def as_binary(mask, name: str = "mask") -> np.ndarray:
    """bool / {0,1} / {0,255} array → bool array; anything else is a clear ValueError."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} has unsupported dtype {arr.dtype}; use bool, 0/1 or 0/255")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    values = np.unique(arr)
    if np.isin(values, (0, 1)).all():
        return arr == 1
    if np.isin(values, (0, 255)).all():
        return arr == 255
    raise ValueError(f"{name} must be binary (bool, 0/1 or 0/255); found values "
                     f"{values[:6].tolist()}{' ...' if len(values) > 6 else ''} — threshold it first")


def _pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    p, g = as_binary(pred, "prediction"), as_binary(gt, "ground truth")
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} differs from ground truth shape {g.shape}")
    return p, g


def iou(pred, gt) -> float:
    """Intersection over union of one image (1.0 when both are empty)."""
    p, g = _pair(pred, gt)
    union = np.count_nonzero(p | g)
    return 1.0 if union == 0 else np.count_nonzero(p & g) / union


def boundary_radii(height: int, width: int) -> list[int]:
    max_radius = (width + height) / 300
    return [1 + int((max_radius - 1) / N_RADII * i) for i in range(N_RADII)]


def ellipse_kernel(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def boundary_accuracies(pred, gt) -> list[float]:
    """Accuracy inside the GT boundary band for each of the 5 radii."""
    p, g = _pair(pred, gt)
    g8 = g.astype(np.uint8)
    accs = []
    for r in boundary_radii(*g.shape):
        region = cv2.morphologyEx(g8, cv2.MORPH_GRADIENT, ellipse_kernel(r)) > 0
        n = np.count_nonzero(region)
        accs.append(1.0 if n == 0 else np.count_nonzero(p[region] == g[region]) / n)
    return accs


def boundary_accuracy(pred, gt) -> float:
    """mBA of one image: the mean of ``boundary_accuracies``."""
    return float(np.mean(boundary_accuracies(pred, gt)))


@dataclass
class SegmentationScores:
    """Accumulates a dataset: total intersection / total union and the mean of per-image BA."""

    intersection: int = 0
    union: int = 0
    per_image: list[dict] = field(default_factory=list)

    def add(self, pred, gt, name: str | None = None) -> dict:
        p, g = _pair(pred, gt)
        inter, uni = int(np.count_nonzero(p & g)), int(np.count_nonzero(p | g))
        self.intersection += inter
        self.union += uni
        accs = boundary_accuracies(p, g)
        row = {"name": name if name is not None else str(len(self.per_image)),
               "iou": 1.0 if uni == 0 else inter / uni, "mba": float(np.mean(accs)),
               "ba_per_radius": accs}
        self.per_image.append(row)
        return row

    @property
    def iou(self) -> float:
        return 1.0 if self.union == 0 else self.intersection / self.union

    @property
    def mba(self) -> float:
        return float(np.mean([r["mba"] for r in self.per_image])) if self.per_image else float("nan")

    @property
    def mean_image_iou(self) -> float:
        return float(np.mean([r["iou"] for r in self.per_image])) if self.per_image else float("nan")

    def summary(self) -> dict:
        return {"iou": self.iou, "mba": self.mba, "mean_image_iou": self.mean_image_iou,
                "images": len(self.per_image)}
