"""Speed of the default pipeline (trust region + boundary solve) against the network's fast path
alone and OpenCV GrabCut, as ratios measured in one run, on the real 3492×2328 photo; and how
far tiles agree with one big tile.

    python benchmarks/bench_boundary_speed.py                 # ../shared/data/uhr/aeroplane.*
    python benchmarks/bench_boundary_speed.py --image I --mask M --repeat 3

Each method runs ``--repeat`` times, interleaved, and the fastest run counts (the machine is
shared; the minimum is the least disturbed). The model is loaded and warmed up first.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NAPARI_AIRM_DATA") or REPO.parent / "shared" / "data")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", type=Path, default=DATA / "uhr" / "aeroplane.jpg")
    p.add_argument("--mask", type=Path, default=DATA / "uhr" / "aeroplane_coarse.png")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--agreement-tile", type=int, default=512,
                   help="tile side compared with one tile covering the image (default 512)")
    args = p.parse_args(argv)
    if not args.image.exists():
        print(f"bench_boundary_speed: error: {args.image} not found (--image, or NAPARI_AIRM_DATA)",
              file=sys.stderr)
        return 2

    import torch

    import napari_airm as airm
    from napari_airm.baselines import grabcut_refine
    from napari_airm.io_utils import read_image, read_mask

    image = np.asarray(read_image(args.image))
    coarse = np.asarray(read_mask(args.mask)[0]) > 0
    h, w = coarse.shape
    model = airm.load_model(device="cpu")
    airm.refine(image[:512, :512], coarse[:512, :512], model=model, device="cpu")  # warm-up
    methods = {
        "network fast path (reach=None, solve=False)": lambda: airm.refine(
            image, coarse, "network", model=model, device="cpu"),
        "default (trust region + boundary solve)": lambda: airm.refine(
            image, coarse, model=model, device="cpu"),
        "OpenCV GrabCut (baselines.grabcut_refine)": lambda: grabcut_refine(image, coarse),
    }
    best = {k: np.inf for k in methods}
    results = {}
    for _ in range(args.repeat):
        for name, run in methods.items():
            t0 = time.perf_counter()
            results[name] = run()
            best[name] = min(best[name], time.perf_counter() - t0)
    mp = h * w / 1e6
    print(f"image {args.image.name}: {w}×{h} ({mp:.1f} MP), torch threads {torch.get_num_threads()}, "
          f"best of {args.repeat}")
    print("| method | seconds | MP/s |")
    print("|---|---:|---:|")
    for name, s in best.items():
        print(f"| {name} | {s:.2f} | {mp / s:.2f} |")
    fast, default, grabcut = (best[k] for k in methods)  # in the order of ``methods``
    print(f"\ndefault vs GrabCut throughput: {grabcut / default:.2f}x; "
          f"default vs the network fast path: {fast / default:.2f}x "
          f"({100 * (default / fast - 1):+.0f} % time)")
    whole = airm.refine(image, coarse, model=model, device="cpu", tile=max(h, w) // 16 * 16 + 16)
    tiled = airm.refine(image, coarse, model=model, device="cpu", tile=args.agreement_tile)
    print(f"tiles of {args.agreement_tile} agree with one tile on {100 * (whole == tiled).mean():.3f} % "
          "of pixels")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
