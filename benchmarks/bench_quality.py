#!/usr/bin/env python
"""Quality benchmark: IoU and mBA of coarse masks, OpenCV GrabCut and the AIRM model.

Sets (choose with flags; several may be combined):

* ``val`` (default): ``shared/data/duts-tr/val`` (500 natural photos, ≤400 px, real masks),
  each with the fixed seeded coarse masks of ``napari_airm.data.ValCases`` in both modes
  (``perturb``: annotation-like errors at IoU 0.8–1.0; ``lowres``: a ×8–16 low-resolution
  segmenter's output).
* ``--unseen``: images no one here chose or trained on, found among PyPI packages that ship
  images *with* ground-truth masks (see ``UNSEEN_SOURCES``; install the package to enable it).
  Today only StarDist's bundled fluorescence-nuclei image qualifies (microscopy, not a natural
  photo: an out-of-domain check). Coarse masks are made the same seeded way as for ``val``.
* ``--uhr``: **pseudo**-ultra-high-resolution cases: val images upscaled ×8 (bicubic image;
  mask blurred, upscaled and thresholded, so its outline stays smooth), coarse masks
  synthesised at full size. No real 2K–6K image with a ground-truth mask is available offline;
  these numbers test the tiled engine at UHR sizes, not real UHR photographs.

IoU is total intersection / total union over the set; mBA is CascadePSP's mean boundary
accuracy averaged over images (``napari_airm.metrics.SegmentationScores``).

Example::

    python benchmarks/bench_quality.py --limit 20 --json results.json
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VAL = REPO.parent / "shared" / "data" / "duts-tr" / "val"
MODES = ("perturb", "lowres")
METHODS = ("coarse", "grabcut", "model")


def _seed(*parts) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


# ----------------------------------------------------------------------------- case sources
# A case is (name, image uint8 H×W×3, coarse bool H×W, gt bool H×W).


def val_cases(root: Path, mode: str, limit: int | None, seed: int) -> tuple[int, Iterator]:
    from napari_airm.data import ValCases

    cases = ValCases(root, mode=mode, seed=seed, limit=limit)
    return len(cases), (cases[i] for i in range(len(cases)))


def _stardist_nuclei():
    """StarDist's bundled 2-D fluorescence nuclei image and its label mask (512×512)."""
    import tifffile

    spec = importlib.util.find_spec("stardist")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None, "not installed (pip install --no-deps stardist)"
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "images"
    img_path, mask_path = folder / "img2d.tif", folder / "mask2d.tif"
    if not img_path.is_file() or not mask_path.is_file():
        return None, f"installed, but {img_path.name}/{mask_path.name} are missing from {folder}"
    raw = tifffile.imread(img_path).astype(np.float32)
    lo, hi = np.percentile(raw, (1, 99.8))  # StarDist's own normalisation
    grey = (np.clip((raw - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
    gt = tifffile.imread(mask_path) > 0
    return [("stardist-nuclei2d", np.repeat(grey[..., None], 3, axis=2), gt)], None


# name → loader returning ([(name, image, gt), ...] | None, reason-if-None)
UNSEEN_SOURCES: dict[str, Callable] = {"stardist (fluorescence nuclei, microscopy)": _stardist_nuclei}


def unseen_pairs() -> tuple[list, list[str]]:
    pairs, notes = [], []
    for label, loader in UNSEEN_SOURCES.items():
        try:
            found, reason = loader()
        except Exception as exc:  # a broken optional package must not stop the benchmark
            found, reason = None, f"failed to load: {exc}"
        if found:
            pairs += found
            notes.append(f"{label}: {len(found)} image(s)")
        else:
            notes.append(f"{label}: {reason}")
    return pairs, notes


def unseen_cases(pairs, mode: str, seed: int) -> tuple[int, Iterator]:
    from napari_airm.data import synthesize_coarse

    def gen():
        for name, image, gt in pairs:
            rng = np.random.default_rng(_seed("unseen", seed, mode, name))
            yield name, image, synthesize_coarse(gt, rng, mode), gt
    return len(pairs), gen()


def upscale_pair(image: np.ndarray, gt: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-UHR: bicubic image; the mask blurred (σ ≈ 1 px), upscaled bilinearly, thresholded."""
    h, w = gt.shape
    size = (w * scale, h * scale)
    big = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
    soft = cv2.GaussianBlur(gt.astype(np.float32), (0, 0), 1.0)
    big_gt = cv2.resize(soft, size, interpolation=cv2.INTER_LINEAR) > 0.5
    return big, big_gt


def uhr_cases(root: Path, mode: str, limit: int | None, seed: int, scale: int) -> tuple[int, Iterator]:
    from napari_airm.data import find_pairs, read_pair, synthesize_coarse

    pairs = find_pairs(root)[:limit]

    def gen():
        for pair in pairs:
            image, gt = read_pair(pair)
            big, big_gt = upscale_pair(image, gt, scale)
            rng = np.random.default_rng(_seed("uhr", seed, scale, mode, pair.name))
            yield f"{pair.name}@x{scale}", big, synthesize_coarse(big_gt, rng, mode), big_gt
    return len(pairs), gen()


# ----------------------------------------------------------------------------- scoring


def run_set(title: str, make_cases: Callable[[str], tuple[int, Iterator]], methods, refine_model,
            grabcut_iterations: int, quiet: bool) -> dict:
    from tqdm import tqdm

    from napari_airm.baselines import grabcut_refine
    from napari_airm.metrics import SegmentationScores

    results = {}
    for mode in MODES:
        n, cases = make_cases(mode)
        scores = {m: SegmentationScores() for m in methods}
        seconds = {m: 0.0 for m in methods}
        for name, image, coarse, gt in tqdm(cases, total=n, desc=f"{title}/{mode}", disable=quiet,
                                            leave=False, file=sys.stderr):
            for method in methods:
                t0 = time.perf_counter()
                if method == "coarse":
                    pred = coarse
                elif method == "grabcut":
                    pred = grabcut_refine(image, coarse, iterations=grabcut_iterations)
                else:
                    pred = np.asarray(refine_model(image, coarse)).astype(bool, copy=False)
                seconds[method] += time.perf_counter() - t0
                scores[method].add(pred, gt, name)
        results[mode] = {
            m: {**scores[m].summary(), "sec_per_image": seconds[m] / max(1, n),
                "per_image": [{k: r[k] for k in ("name", "iou", "mba")} for r in scores[m].per_image]}
            for m in methods}
    return results


def markdown_table(results: dict, method_names: dict[str, str]) -> str:
    lines = ["| coarse masks | method | IoU % | mBA % | ΔIoU | ΔmBA | images | s / image |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for mode, by_method in results.items():
        base = by_method.get("coarse")
        for method, r in by_method.items():
            d_iou = d_mba = ""
            if base is not None and method != "coarse":
                d_iou = f"{100 * (r['iou'] - base['iou']):+.2f}"
                d_mba = f"{100 * (r['mba'] - base['mba']):+.2f}"
            sec = "" if method == "coarse" else f"{r['sec_per_image']:.2f}"
            lines.append(f"| {mode} | {method_names.get(method, method)} | {100 * r['iou']:.2f} | "
                         f"{100 * r['mba']:.2f} | {d_iou} | {d_mba} | {r['images']} | {sec} |")
    return "\n".join(lines)


def _git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev or "unknown") + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_VAL,
                   help=f"validation folder with images/ and masks/ (default {DEFAULT_VAL})")
    p.add_argument("--limit", type=int, help="first N images only (default: all; --uhr: 20)")
    p.add_argument("--model", help="model folder (default: the bundled model)")
    p.add_argument("--device", help="cpu, cuda, ... (default: CUDA when available)")
    p.add_argument("--tile", type=int, default=1024, help="engine tile side (default 1024)")
    p.add_argument("--passes", type=int, default=1, help="refinement passes (default 1)")
    p.add_argument("--flips", type=int, default=1, choices=(1, 2, 4),
                   help="flip averaging: 1 (off), 2 (left-right), 4 (and up-down); default 1")
    p.add_argument("--snap", action="store_true",
                   help="edge snapping (refine(..., snap=True)); default off as in the engine")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--grabcut-iterations", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="coarse-mask seed (default 0, as ValCases)")
    p.add_argument("--val", action="store_true", help="run the val set too when --unseen/--uhr is given")
    p.add_argument("--unseen", action="store_true", help="images from PyPI packages never used here")
    p.add_argument("--uhr", action="store_true", help="pseudo-UHR: val images upscaled (see --uhr-scale)")
    p.add_argument("--uhr-scale", type=int, default=8, help="upscaling factor for --uhr (default 8)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", type=Path, help="write all numbers (and per-image scores) here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        print(f"bench_quality: error: unknown method(s) {unknown}; choose from {METHODS}", file=sys.stderr)
        return 2
    sets = [s for s, on in (("val", args.val), ("unseen", args.unseen), ("uhr", args.uhr)) if on]
    sets = sets if (args.unseen or args.uhr) else ["val"]
    if ("val" in sets or "uhr" in sets) and not args.data.is_dir():
        print(f"bench_quality: error: validation folder {args.data} does not exist", file=sys.stderr)
        return 2

    import torch

    from napari_airm import api

    if args.threads:
        torch.set_num_threads(args.threads)
    device = api.resolve_device(args.device)
    model = model_label = None
    model_meta: dict = {}
    if "model" in methods:
        try:
            model = api.load_model(args.model, device=str(device))
        except Exception as exc:
            print(f"bench_quality: error: cannot load the model ({exc}); pass --model DIR or "
                  f"--methods coarse,grabcut", file=sys.stderr)
            return 1
        from napari_airm.model.io import default_model_path, read_config

        folder = Path(args.model) if args.model else default_model_path()
        model_label = f"AIRM ({folder.name})"
        try:
            model_meta = {"path": str(folder), **read_config(folder).get("metadata", {})}
        except Exception:
            model_meta = {"path": str(folder)}

    def refine_model(image, coarse):
        return api.refine(image, coarse, model=model, device=str(device), tile=args.tile,
                          passes=args.passes, flips=args.flips, snap=args.snap)

    command = shlex.join(["python", *sys.argv]) if argv is None else shlex.join(
        ["python", "benchmarks/bench_quality.py", *argv])
    header = [
        "# napari-airm quality benchmark",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; code: {_git_revision()}",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), device {device}",
        f"- model: {model_meta.get('path', 'not run')}"
        + (f" (trained {model_meta['steps']} steps)" if model_meta.get("steps") is not None else ""),
        "- IoU: total intersection / total union over the set; mBA: CascadePSP's mean boundary "
        "accuracy, averaged over images; Δ: change against the coarse input (percentage points)",
    ]
    print("\n".join(header))
    names = {"coarse": "coarse input", "grabcut": f"OpenCV GrabCut ({args.grabcut_iterations} it.)",
             "model": (model_label or "model") + (f", {args.passes} passes" if args.passes > 1 else "")
             + (f", {args.flips} flips" if args.flips > 1 else "")
             + (", snap" if args.snap else "")}
    report = {"command": command, "code": _git_revision(), "device": str(device), "model": model_meta,
              "methods": methods, "seed": args.seed, "passes": args.passes,
              "flips": args.flips, "snap": args.snap, "sets": {}}

    for name in sets:
        if name == "val":
            title = f"val: {args.data} ({'first ' + str(args.limit) if args.limit else 'all'} images)"
            make = lambda mode: val_cases(args.data, mode, args.limit, args.seed)  # noqa: E731
        elif name == "unseen":
            pairs, notes = unseen_pairs()
            print("\n## unseen images\n")
            for note in notes:
                print(f"- {note}")
            if not pairs:
                print("\nno unseen image with a ground-truth mask is installed; nothing to score")
                report["sets"]["unseen"] = {"sources": notes, "results": None}
                continue
            title = f"unseen: {len(pairs)} image(s) from installed packages"
            make = lambda mode, pairs=pairs: unseen_cases(pairs, mode, args.seed)  # noqa: E731
        else:
            limit = args.limit if args.limit is not None else 20
            title = (f"PSEUDO-UHR: val images upscaled x{args.uhr_scale} (first {limit}); not real "
                     f"UHR photographs")
            make = lambda mode, limit=limit: uhr_cases(args.data, mode, limit, args.seed,  # noqa: E731
                                                       args.uhr_scale)
        t0 = time.perf_counter()
        results = run_set(name, make, methods, refine_model, args.grabcut_iterations, args.quiet)
        print(f"\n## {title}\n")
        print(markdown_table(results, names))
        print(f"\n({time.perf_counter() - t0:.0f} s)")
        report["sets"][name] = {"title": title, "results": results,
                                **({"sources": notes} if name == "unseen" else {})}
        if args.json:  # written after every set, so a long run keeps what it has
            args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.json:
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
