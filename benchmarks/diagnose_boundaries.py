"""Where do a model's boundary errors come from? Cheap what-if variants of its output on val.

    python benchmarks/diagnose_boundaries.py --model models/airm-default --limit 60

For each coarse-mask mode it scores (IoU / mBA, percent) the coarse mask, the model's output
thresholded at 0.3–0.7, the output dilated / eroded by one pixel, shifted by one pixel in each
direction, averaged over four flips (test-time augmentation), and the ground truth
round-tripped through ½ and ¼ resolution (what features at that resolution could express at
best). Reading: a better score after dilation/erosion/shift means a systematic bias; a large
flip gain means a directional bias or noisy output; a low ½ / ¼ ceiling means resolution limits.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import cv2
import numpy as np

from napari_airm.api import load_model
from napari_airm.data import ValCases
from napari_airm.engine.frame import refine_whole
from napari_airm.metrics import SegmentationScores

DEFAULT_VAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "duts-tr" / "val"
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
SHIFTS = {"down": (1, 0), "up": (-1, 0), "right": (0, 1), "left": (0, -1)}


def flipped(model, image, coarse, axes) -> np.ndarray:
    """The model's probability on the image flipped along ``axes``, flipped back."""
    f = lambda a: np.ascontiguousarray(np.flip(a, axes)) if axes else a  # noqa: E731
    return f(refine_whole(model, f(image), f(coarse)))


def diagnose(model, cases) -> dict[str, SegmentationScores]:
    names = (["coarse"] + [f"threshold {t}" for t in THRESHOLDS] + ["dilated 1 px", "eroded 1 px"]
             + [f"shifted {s}" for s in SHIFTS] + ["4-flip average", "GT via 1/2 res", "GT via 1/4 res"])
    scores = {n: SegmentationScores() for n in names}
    kernel = np.ones((3, 3), np.uint8)
    for _, image, coarse, gt in cases:
        prob = refine_whole(model, image, coarse)
        scores["coarse"].add(coarse > 0.5, gt)
        for t in THRESHOLDS:
            scores[f"threshold {t}"].add(prob > t, gt)
        binary = (prob > 0.5).astype(np.uint8)
        scores["dilated 1 px"].add(cv2.dilate(binary, kernel) > 0, gt)
        scores["eroded 1 px"].add(cv2.erode(binary, kernel) > 0, gt)
        for name, (dy, dx) in SHIFTS.items():
            scores[f"shifted {name}"].add(np.roll(binary, (dy, dx), (0, 1)) > 0, gt)
        tta = (prob + sum(flipped(model, image, coarse, a) for a in ((0,), (1,), (0, 1)))) / 4
        scores["4-flip average"].add(tta > 0.5, gt)
        g = gt.astype(np.float32)
        h, w = g.shape
        for f, name in ((2, "GT via 1/2 res"), (4, "GT via 1/4 res")):
            small = cv2.resize(g, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
            scores[name].add(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR) > 0.5, gt)
    return scores


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model folder (default: the bundled model)")
    p.add_argument("--data", type=Path, default=DEFAULT_VAL)
    p.add_argument("--limit", type=int, default=60)
    p.add_argument("--modes", default="perturb,lowres")
    args = p.parse_args(argv)
    model = load_model(args.model).eval()
    for mode in args.modes.split(","):
        scores = diagnose(model, ValCases(args.data, mode=mode, limit=args.limit))
        print(f"\n{mode} (first {args.limit} val images)\n\n| variant | IoU % | mBA % |\n|---|---:|---:|")
        for name, s in scores.items():
            print(f"| {name} | {100 * s.iou:.2f} | {100 * s.mba:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
