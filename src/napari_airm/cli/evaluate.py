"""``napari-airm evaluate``: IoU and mBA of predicted masks against ground truth."""
from __future__ import annotations

import sys

from ._common import CLIError, Parents
from ._report import check_json_target, format_per_image, format_summary, write_json


def _read_masks(paths, what: str):
    from .. import io_utils

    return [io_utils.read_binary_mask(p) for p in paths]


def run_evaluate(args) -> int:
    from .. import io_utils
    from ..api import evaluate

    pairs, missing = io_utils.match_by_stem(args.pred, args.gt)
    names = [n for n, _, _ in pairs]
    coarse_paths = None
    if args.coarse:
        cpairs, cmissing = io_utils.match_by_stem(args.coarse, args.gt, ("coarse mask", "ground truth"))
        by_name = {n: c for n, c, _ in cpairs}
        if len(pairs) == 1 and len(cpairs) == 1:
            by_name = {names[0]: cpairs[0][1]}
        lacking = [n for n in names if n not in by_name]
        if lacking:
            raise CLIError(f"no coarse mask for {len(lacking)} prediction(s) in {args.coarse} "
                           f"(first: {', '.join(lacking[:3])})")
        coarse_paths = [by_name[n] for n in names]
    if args.json:
        inputs = [p for _, p, g in pairs] + [g for _, p, g in pairs] + list(coarse_paths or [])
        check_json_target(args.json, args.overwrite, inputs)
    if missing:
        print(f"note: {len(missing)} file(s) without a partner were left out "
              f"(first: {', '.join(missing[:3])})", file=sys.stderr)
    preds = _read_masks([p for _, p, _ in pairs], "prediction")
    gts = _read_masks([g for _, _, g in pairs], "ground truth")
    coarse = _read_masks(coarse_paths, "coarse mask") if coarse_paths else None
    for i, name in enumerate(names):
        if preds[i].shape != gts[i].shape:
            raise CLIError(f"{name}: prediction is {preds[i].shape[0]}x{preds[i].shape[1]} but ground "
                           f"truth is {gts[i].shape[0]}x{gts[i].shape[1]}")
        if coarse is not None and coarse[i].shape != gts[i].shape:
            raise CLIError(f"{name}: coarse mask is {coarse[i].shape[0]}x{coarse[i].shape[1]} but "
                           f"ground truth is {gts[i].shape[0]}x{gts[i].shape[1]}")
    report = evaluate(preds, gts, coarse=coarse, names=names)
    print(f"{len(names)} image(s); IoU = total intersection / total union, mBA = mean over images")
    print(format_summary(report))
    if not args.no_per_image:
        print()
        print(format_per_image(report))
    if args.json:
        write_json(args.json, report, overwrite=args.overwrite)
        print(f"\nwrote {args.json}")
    return 0


def add_to(sub, parents: Parents) -> None:
    """The ``evaluate`` subcommand."""
    p = sub.add_parser("evaluate", parents=[parents.common],
                       help="IoU and mBA of predictions against ground truth",
                       description="Score PRED against GT (files, or folders matched by file stem). "
                                   "IoU is total intersection / total union; mBA is CascadePSP's mean "
                                   "boundary accuracy, averaged over images. 8-bit soft masks are "
                                   "thresholded at 127, label images count every id as foreground.")
    p.add_argument("pred", metavar="PRED", help="predicted mask file or folder")
    p.add_argument("gt", metavar="GT", help="ground-truth mask file or folder")
    p.add_argument("--coarse", metavar="C", help="coarse masks (file or folder) to report the gain")
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json FILE")
    p.add_argument("--no-per-image", action="store_true", help="print only the overall table")
    p.set_defaults(func=run_evaluate)
