"""Seconds per training step (forward + backward + Adam) vs seconds per batch of data.

    python benchmarks/bench_train_step.py --model airm-b0 --batch 8 --size 224 --steps 10

The model step uses the training recipe's forward (random encode scale, boundary-centred decode
window, all losses incl. affinity) on synthetic tensors, after ``--warmup`` untimed steps. The data
time is what a loader worker spends per batch: decode JPEG/PNG, random scale + crop, flip, colour
jitter, coarse-mask synthesis (``TrainCrops``), on the real DUTS-TR training folder if present.
A ratio data/model above 1 / workers means training is data-bound. On the CPU the model runs
channels-last, as the trainer does; ``--compare-layouts`` also times the plain (NCHW) layout in
the same run and prints the ratio. ``--data`` takes several
folders (``DIR=WEIGHT``) to time a mix, ``--identity-share`` / ``--lowres-share`` a recipe's masks:

    python benchmarks/bench_train_step.py --data ../shared/data/duts-tr/train=0.6 \
        ../shared/data/extra/dsb2018_nuclei=0.4 --identity-share 0.3 --lowres-share 0.5
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from napari_airm.losses import LossWeights
from napari_airm.model import build_model
from napari_airm.training.step import training_forward

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "duts-tr" / "train"


def synthetic_batch(batch: int, size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    gts, coarses = [], []
    for _ in range(batch):
        cy, cx, r = (torch.rand(3, generator=g) * torch.tensor([0.4, 0.4, 0.2]) + torch.tensor([0.3, 0.3, 0.15])) * size
        gt = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2).float()
        coarse = ((yy - cy - 3) ** 2 + (xx - cx + 2) ** 2 <= (r * 0.95) ** 2).float()
        gts.append(gt)
        coarses.append(coarse)
    gt = torch.stack(gts)[:, None]
    coarse = torch.stack(coarses)[:, None]
    rgb = torch.rand(batch, 3, size, size, generator=g) * 0.5 + gt * 0.4
    return rgb, coarse, gt


def time_steps(model, *, batch: int, size: int, steps: int, warmup: int, window: int | None,
               device: str = "cpu", channels_last: bool | None = None) -> list[float]:
    """Seconds of each of ``steps`` training steps of ``model`` (after ``warmup`` untimed ones) on
    synthetic crops; ``channels_last`` defaults to what the trainer does (on the CPU)."""
    torch.manual_seed(0)
    device = torch.device(device)
    model = model.to(device).train()
    if channels_last is None:
        channels_last = device.type == "cpu"
    if channels_last:
        model.use_channels_last()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    rgb, coarse, gt = (t.to(device) for t in synthetic_batch(batch, size))
    weights = LossWeights()
    times = []
    for step in range(warmup + steps):
        gen = torch.Generator().manual_seed(step)
        scale = 0.5 + 0.5 * torch.rand(1, generator=gen).item()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss, _ = training_forward(model, rgb, coarse, gt, encode_scale=scale, window=window,
                                   weights=weights, generator=gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def time_model(args, channels_last: bool) -> list[float]:
    torch.manual_seed(0)
    return time_steps(build_model(args.model), batch=args.batch, size=args.size, steps=args.steps,
                      warmup=args.warmup, window=args.window, device=args.device,
                      channels_last=channels_last)


def time_data(args) -> list[float] | None:
    from napari_airm.data import TrainCrops

    from napari_airm.data import DataSource

    sources = [DataSource.parse(spec) for spec in args.data]
    if not all((s.root / "images").is_dir() for s in sources):
        return None
    dataset = TrainCrops(sources, crop=args.size, coarse_mode=args.coarse_mode,
                         lowres_share=args.lowres_share, identity_share=args.identity_share)
    rng = np.random.default_rng(0)
    if len(dataset.groups) == 1:
        order = rng.permutation(len(dataset))
    else:  # as training draws them: a folder by its weight, then one of its images
        folders = rng.choice(len(dataset.groups), size=args.data_batches * args.batch, p=dataset.weights)
        order = np.array([rng.choice(dataset.groups[f]) for f in folders])
    times = []
    for b in range(args.data_batches):
        idx = order[b * args.batch:(b + 1) * args.batch]
        t0 = time.perf_counter()
        samples = [dataset[int(i)] for i in idx]
        torch.utils.data.default_collate(samples)
        times.append(time.perf_counter() - t0)
    return times


def describe(times: list[float]) -> str:
    spread = f" ± {statistics.stdev(times):.3f}" if len(times) > 1 else ""
    return f"{statistics.mean(times):.3f} s{spread} (min {min(times):.3f}, n={len(times)})"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="airm-b0")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=224, help="crop size (pixels a side)")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--window", type=int, default=112, help="decode window (0: whole crop)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compare-layouts", action="store_true",
                   help="also time the plain NCHW layout (the trainer uses channels-last on CPU)")
    p.add_argument("--data", nargs="+", default=[str(DEFAULT_DATA)], metavar="DIR[=W]",
                   help="images/ + masks/ folder(s), each with an optional weight (a mix draws "
                        "from each folder by its weight)")
    p.add_argument("--data-batches", type=int, default=None, help="timed data batches (default --steps)")
    p.add_argument("--coarse-mode", default="mixed")
    p.add_argument("--lowres-share", type=float, default=0.25)
    p.add_argument("--identity-share", type=float, default=0.0, help="near-identity coarse masks")
    args = p.parse_args(argv)
    args.window = args.window or None
    args.data_batches = args.data_batches or args.steps
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"{args.model}, batch {args.batch}, {args.size}², {args.device}, "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs")
    channels_last = torch.device(args.device).type == "cpu"
    model_times = time_model(args, channels_last)
    model_mean = statistics.mean(model_times)
    layout = "channels-last" if channels_last else "NCHW"
    print(f"model step (fwd+bwd+Adam, {layout}): {describe(model_times)}  "
          f"= {args.batch / model_mean:.1f} samples/s")
    if args.compare_layouts and channels_last:
        plain = statistics.mean(time_model(args, False))
        print(f"model step (fwd+bwd+Adam, NCHW): {plain:.3f} s; NCHW / channels-last = "
              f"{plain / model_mean:.2f}")

    data_times = time_data(args)
    if data_times is None:
        print(f"data pipeline: skipped ({' '.join(args.data)} not found)")
        return 0
    data_mean = statistics.mean(data_times)
    print(f"data per batch (1 process, decode+scale+crop+jitter+coarse): {describe(data_times)}")
    print(f"ratio data/model: {data_mean / model_mean:.2f}  "
          f"(workers needed to keep up: {int(np.ceil(data_mean / model_mean))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
