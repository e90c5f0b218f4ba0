"""The score tables the commands print and the JSON reports they write."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ._common import CLIError


def _pct(v) -> str:
    return "   n/a" if v is None or v != v else f"{100 * v:6.2f}"


def _gain(v) -> str:
    return "   n/a" if v is None or v != v else f"{100 * v:+6.2f}"


def format_summary(report: dict) -> str:
    """The overall table: IoU and mBA (in %) of coarse, refined and the gain."""
    lines = [f"{'':<10} {'IoU %':>8} {'mBA %':>8}"]
    if "coarse" in report:
        c = report["coarse"]
        lines.append(f"{'coarse':<10} {_pct(c['iou']):>8} {_pct(c['mba']):>8}")
    r = report["refined"]
    lines.append(f"{'refined':<10} {_pct(r['iou']):>8} {_pct(r['mba']):>8}")
    if "gain" in report:
        g = report["gain"]
        lines.append(f"{'gain':<10} {_gain(g['iou']):>8} {_gain(g['mba']):>8}")
    return "\n".join(lines)


def format_per_image(report: dict) -> str:
    rows = report["per_image"]
    width = max([len("image")] + [len(str(r["name"])) for r in rows])
    has_coarse = "coarse" in report
    head = f"{'image':<{width}} {'IoU %':>8} {'mBA %':>8}"
    if has_coarse:
        head += f" {'coarse IoU':>11} {'coarse mBA':>11}"
    lines = [head]
    for r in rows:
        line = f"{str(r['name']):<{width}} {_pct(r['refined_iou']):>8} {_pct(r['refined_mba']):>8}"
        if has_coarse:
            line += f" {_pct(r['coarse_iou']):>11} {_pct(r['coarse_mba']):>11}"
        lines.append(line)
    return "\n".join(lines)


def check_json_target(path: str | os.PathLike, overwrite: bool, inputs=()) -> Path:
    """Refuse a --json FILE that would replace one of the command's inputs (ever) or an
    existing file (without --overwrite); checked before any work is done."""
    from .. import io_utils

    path = Path(path)
    for p in inputs:
        p = Path(p)
        if p.exists() and path.exists() and os.path.samefile(p, path) or \
                path.resolve() == p.resolve():
            raise CLIError(f"--json {path} is one of the inputs; choose another file for the report")
    io_utils.check_replaceable(path)
    if path.exists() and not overwrite:
        raise CLIError(f"{path} already exists; pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise CLIError(f"folder {path.parent} for --json {path.name} does not exist")
    return path


def write_json(path: str | os.PathLike, data, overwrite: bool = False) -> None:
    from .. import io_utils

    with io_utils.atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
