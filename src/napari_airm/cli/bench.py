"""``napari-airm bench``: speed and memory of the engine."""
from __future__ import annotations

import argparse
from pathlib import Path

from ._common import CLIError, Parents, check_model, positive_int


def run_bench(args) -> int:
    if args.distributed:
        from ..engine.bench_distributed import run_distributed_bench

        run_distributed_bench(size=args.zarr_size[0], tile=args.tile, workers=args.workers,
                              model=check_model(args.model), device=args.device, out=print)
        return 0
    try:
        from ..engine.bench import run_bench, zarr_sizes
    except ImportError as exc:
        if getattr(exc, "name", None) in ("napari_airm.engine.bench", None) or "run_bench" in str(exc):
            raise CLIError("the speed benchmark (napari_airm.engine.bench.run_bench) is not available "
                           "in this installation") from exc
        raise
    for path, what in ((args.image, "image"), (args.mask, "mask")):
        if path is not None and not Path(path).exists():
            raise CLIError(f"{what} {path} does not exist")
    if args.image is not None and args.mask is None:
        raise CLIError("--image needs its coarse mask: --mask PATH")
    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise CLIError(f"--data-root {args.data_root} is not a folder")
    sizes = args.zarr_size if len(args.zarr_size) > 1 else zarr_sizes(args.zarr_size[0])
    skip = args.skip | ({"dense"} if args.no_dense else set())
    run_bench(image=args.image, mask=args.mask, sizes=sizes, tile=args.tile, skip=skip,
              model=check_model(args.model), device=args.device, data_root=args.data_root, out=print)
    return 0


def _bench_sizes(text: str) -> tuple[int, ...]:
    """--zarr-size: N, or A,B,... (each a side of at least 64 px)."""
    try:
        sizes = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 64:
        raise argparse.ArgumentTypeError(f"expected a side N >= 64 or sides A,B,... >= 64, not {text!r}")
    return sizes


def _bench_parts(text: str) -> set[str]:
    """--skip: comma-separated parts of the benchmark (``run_bench`` names the valid ones)."""
    return {t.strip() for t in text.split(",") if t.strip()}


def add_to(sub, parents: Parents) -> None:
    """The ``bench`` subcommand."""
    p = sub.add_parser("bench", parents=[parents.common], help="speed and memory of the engine",
                       description="Time the engine on the real photo (fast path against dense) "
                                   "and on synthetic zarr scenes, each refined in a fresh process "
                                   "whose own peak memory is reported.")
    p.add_argument("--image", metavar="PATH",
                   help="photo to time (default: uhr/aeroplane.jpg in the data root)")
    p.add_argument("--mask", metavar="PATH", help="the photo's coarse mask (needed with --image)")
    p.add_argument("--data-root", metavar="DIR",
                   help="the team's data folder, holding uhr/ (default: $NAPARI_AIRM_DATA, else "
                        "shared/data in the working directory or its parent, or beside the checkout)")
    p.add_argument("--zarr-size", type=_bench_sizes, default=(20000,), metavar="N|A,B",
                   help="side of the synthetic zarr scene; a quarter of it is run too, for memory "
                        "growth (default 20000); or the sides to run, e.g. 2048,8192")
    p.add_argument("--skip", type=_bench_parts, default=set(), metavar="PARTS",
                   help="leave out parts: photo, dense (the photo's dense reference run), zarr; "
                        "e.g. --skip photo,zarr")
    p.add_argument("--no-dense", action="store_true", help="same as --skip dense")
    p.add_argument("--tile", type=positive_int, default=1024, metavar="N", help="tile side (default 1024)")
    p.add_argument("--model", metavar="DIR", help="model folder (default: the bundled model)")
    p.add_argument("--device", help="cpu, cuda, ... (default: CUDA when available)")
    p.add_argument("--distributed", action="store_true",
                   help="instead: one zarr scene (--zarr-size N) refined in one "
                        "process and on a LocalCluster of --workers single-threaded workers; time "
                        "ratio, peak memory per worker, task times (engine/bench_distributed.py)")
    p.add_argument("--workers", type=positive_int, default=2, metavar="N",
                   help="workers of --distributed's LocalCluster (default 2)")
    p.set_defaults(func=run_bench)
