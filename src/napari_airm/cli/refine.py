"""``napari-airm refine`` (one image) and ``napari-airm refine-many`` (many, as dask tasks)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ._common import CLIError, Parents, check_model, engine_settings, finite_float, progress_bar


def _parse_labels(text: str):
    if text == "all":
        return "all"
    try:
        ids = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise CLIError(f"--labels must be 'all' or comma-separated ids like 1,2,5; got {text!r}") from None
    if not ids:
        raise CLIError("--labels needs at least one id")
    return ids


def run_refine(args) -> int:
    from ..engine.files import refine_file

    progress, close = progress_bar("refine", args.quiet)
    try:
        summary = refine_file(args.image, args.mask, args.output, engine_settings(args),
                              model=check_model(args.model), device=args.device,
                              overwrite=args.overwrite, labels=_parse_labels(args.labels),
                              threshold=args.threshold, scheduler=args.scheduler,
                              progress=progress, started=args.started,
                              note=lambda text: print(f"note: {text}", file=sys.stderr))
    finally:
        close()
    print(f"wrote {summary['output']} ({summary['height']}x{summary['width']} {summary['kind']} mask) "
          f"in {summary['seconds']:.1f} s (start-up, reading and model load "
          f"{summary['load_seconds']:.1f} s; refine and write {summary['refine_seconds']:.1f} s)")
    return 0


def _collect_pairs(args) -> list[tuple[Path, Path]]:
    from .. import io_utils

    pairs: list[tuple[Path, Path]] = []
    if args.pairs:
        if len(args.pairs) % 2:
            raise CLIError("give IMAGE MASK pairs (an even number of paths), or --images/--masks folders")
        it = iter(args.pairs)
        pairs += [(Path(i), Path(m)) for i, m in zip(it, it)]
    if args.images or args.masks:
        if not (args.images and args.masks):
            raise CLIError("--images and --masks go together")
        matched, missing = io_utils.match_by_stem(args.images, args.masks, ("image", "mask"))
        if missing:
            print(f"note: {len(missing)} file(s) without a partner were left out "
                  f"(first: {', '.join(missing[:3])})", file=sys.stderr)
        pairs += [(i, m) for _, i, m in matched]
    if not pairs:
        raise CLIError("nothing to refine: give IMAGE MASK pairs or --images DIR --masks DIR")
    for image, mask in pairs:
        for p, what in ((image, "image"), (mask, "mask")):
            if not p.exists():
                raise CLIError(f"{what} {p} does not exist")
    return pairs


def run_refine_many(args) -> int:
    from ..api import refine_many

    pairs = _collect_pairs(args)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = refine_many(pairs, out_dir, engine_settings(args), model=check_model(args.model),
                          scheduler=args.scheduler, device=args.device, overwrite=args.overwrite)
    for p in outputs:
        print(p)
    print(f"refined {len(outputs)} of {len(pairs)} image(s) into {out_dir} in "
          f"{time.perf_counter() - args.started:.1f} s", file=sys.stderr)
    return 0


def add_to(sub, parents: Parents) -> None:
    """The ``refine`` and ``refine-many`` (alias ``batch``) subcommands."""
    p = sub.add_parser("refine", parents=[parents.common, parents.engine, parents.quiet],
                       help="refine one image's coarse mask",
                       description="Refine MASK of IMAGE into OUT. Formats: .png .jpg .tif .zarr in; "
                                   ".png .tif .zarr out (zarr is read and written tile by tile). "
                                   "Label images (many ids) stay label images.")
    p.add_argument("image", metavar="IMAGE", help="RGB / grey image: .png .jpg .tif .zarr")
    p.add_argument("mask", metavar="MASK", help="coarse mask: binary (0/1, 0/255, bool) or labels")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="refined mask: .png .tif .zarr")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--labels", default="all", metavar="IDS",
                   help="label ids to refine, e.g. 1,4 (default: all)")
    p.add_argument("--threshold", type=finite_float, metavar="T",
                   help="binarise the mask at T (foreground where value > T), e.g. for soft masks")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="refine this one image's tiles as dask tasks: 'local' (a cluster of one "
                        "worker per core) or a scheduler address, e.g. tcp://host:8786; OUT must "
                        "be .zarr on storage every worker sees")
    p.set_defaults(func=run_refine)

    p = sub.add_parser("refine-many", aliases=["batch"], parents=[parents.common, parents.engine],
                       help="refine many images as dask tasks",
                       description="Refine many image/mask pairs with dask.distributed (a local "
                                   "cluster, or --scheduler ADDRESS). Give IMAGE MASK pairs, or "
                                   "--images and --masks folders matched by file stem.")
    p.add_argument("pairs", nargs="*", metavar="IMAGE MASK", help="image and mask paths, in pairs")
    p.add_argument("--images", metavar="DIR", help="folder of images")
    p.add_argument("--masks", metavar="DIR", help="folder of coarse masks (same stems)")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for the results")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="dask scheduler address, e.g. tcp://host:8786 (default: a local cluster)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace outputs that already exist (each atomically)")
    p.set_defaults(func=run_refine_many)
