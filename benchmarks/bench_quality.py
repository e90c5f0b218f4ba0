#!/usr/bin/env python
"""Quality benchmark: IoU and mBA of coarse masks, OpenCV GrabCut and AIRM model variants.

Sets (``--sets val,uhr,unseen,hrf,extra``; the older ``--val`` / ``--unseen`` / ``--uhr`` flags
still work; default ``val``). Data lie under the data root: ``--data-root``, else the
environment variable ``NAPARI_AIRM_DATA``, else ``../shared/data`` beside the repository.

* ``val``: ``duts-tr/val`` (500 natural photos, ≤400 px, real masks).
* ``unseen``: images no one here chose or trained on, found among PyPI packages that ship
  images *with* ground-truth masks (see ``UNSEEN_SOURCES``; install the package to enable it).
  Today only StarDist's bundled fluorescence-nuclei image qualifies (microscopy, not a natural
  photo: an out-of-domain check; ``pip install --no-deps stardist``).
* ``uhr``: **pseudo**-ultra-high-resolution cases: val images upscaled ×8 (bicubic image;
  mask blurred, upscaled and thresholded, so its outline stays smooth), coarse masks
  synthesised at full size. These numbers test the tiled engine at UHR sizes, not real UHR
  photographs.
* ``hrf``: the 15 real 3504×2336 fundus photos of ``hrf/`` with manual blood-vessel masks
  (thin structures, off-domain). One image is in memory at a time; ``--limit N`` for a sample.
* ``extra``: the held-out pairs of every ``extra/<set>`` (a stem is held out when
  ``int(sha1(stem), 16) % 10 == 0``, ``napari_airm.data.dataset.is_heldout`` where the package
  has it), each folder reported as its own set; ``extra/<set>`` picks one folder.

Coarse-mask modes (``--modes``, default ``perturb,lowres``): ``perturb`` and ``lowres`` are
the seeded masks of ``napari_airm.data`` (for val exactly ``ValCases``'); ``gt`` (the ground
truth itself), ``downup4`` (×4 down-up) and ``polygon`` (jittered simplified polygons, local
dilations / erosions, ×12 down-up) come from ``benchmarks/coarse_masks.py``, which shares no
code with training. ``--check-good-masks`` runs ``gt,downup4`` and says for every method
whether each image kept its IoU within ``GOOD_MASK_TOLERANCE`` points of the coarse mask's.

Methods (``--methods``): ``coarse``, ``grabcut`` (``napari_airm.baselines.grabcut_refine``),
``model-raw`` (``refine(reach=None, solve=False)``), ``model-reach`` (``reach="auto",
solve=False``) and ``model`` (the engine's defaults).

IoU is total intersection / total union over the set; mBA is CascadePSP's mean boundary
accuracy averaged over images (``napari_airm.metrics.SegmentationScores``). Every row also
names its worst image: the lowest per-image IoU (and mBA) change against the coarse mask.

Example::

    python benchmarks/bench_quality.py --limit 20 --json results.json
    python benchmarks/bench_quality.py --sets hrf --check-good-masks --limit 5
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import inspect
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import coarse_masks  # noqa: E402  (benchmarks/coarse_masks.py, beside this file)

DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data"
DATA_ENV = "NAPARI_AIRM_DATA"
SETS = ("val", "uhr", "unseen", "hrf", "extra")
PACKAGE_MODES = ("perturb", "lowres")  # napari_airm.data.synthesize_coarse
MODES = PACKAGE_MODES + coarse_masks.MODES
DEFAULT_MODES = ("perturb", "lowres")
GOOD_MASK_MODES = ("gt", "downup4")
GOOD_MASK_TOLERANCE = 0.5  # IoU points a refined near-perfect mask may lose (issue 13)
METHODS = ("coarse", "grabcut", "model-raw", "model-reach", "model-rough", "model")
# Keywords each model variant passes to refine(); the engine's defaults otherwise. Passed only
# when a variant needs them, so `model` runs on engines that do not know them yet.
MODEL_VARIANTS: dict[str, dict] = {
    "model-raw": {"reach": None, "solve": False},
    "model-reach": {"reach": "auto", "solve": False},
    "model-rough": {"keep": 1.0},  # the "rough" preset (engine.settings.ROUGH_KEEP)
    "model": {},
}
VARIANT_LABELS = {"model-raw": "no trust region, no solve", "model-reach": "trust region, no solve",
                  "model-rough": "preset rough (keep=1)", "model": "defaults"}


def _seed(*parts) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def _heldout_rule() -> tuple[Callable[[str], bool], str]:
    """The package's held-out rule for ``extra/`` when it has one, else the same rule here."""
    try:
        from napari_airm.data.dataset import is_heldout

        return is_heldout, "napari_airm.data.dataset.is_heldout"
    except ImportError:
        pass

    def local_is_heldout(stem: str) -> bool:
        # Local copy of the rule napari_airm.data.dataset.is_heldout is to implement (keep in
        # step with it): one stem in ten, by its SHA-1, is kept out of training.
        return int(hashlib.sha1(stem.encode()).hexdigest(), 16) % 10 == 0

    return local_is_heldout, "local copy of the sha1(stem) % 10 == 0 rule"


# ----------------------------------------------------------------------------- case sources
# A set is a lazy sequence of (name, image uint8 H×W×3, gt bool H×W) pairs, loaded one at a
# time; a case adds the coarse mask of one mode: (name, image, coarse, gt).


@dataclass
class CaseSet:
    key: str                                    # "val", "hrf", "extra/dsb2018_nuclei", ...
    title: str
    seed_of: Callable[[int, str, str], int]     # (seed, mode, case name) → coarse-mask seed
    count: int
    pairs: Callable[[], Iterator[tuple[str, np.ndarray, np.ndarray]]]
    notes: list | None = None


def coarse_for(gt: np.ndarray, mode: str, seed: int) -> np.ndarray:
    if mode in PACKAGE_MODES:
        from napari_airm.data import synthesize_coarse

        return synthesize_coarse(gt, np.random.default_rng(seed), mode)
    return coarse_masks.make_coarse(gt, mode, seed=seed)


def cases(case_set: CaseSet, mode: str, seed: int) -> Iterator[tuple]:
    for name, image, gt in case_set.pairs():
        yield name, image, coarse_for(gt, mode, case_set.seed_of(seed, mode, name)), gt
        del image, gt  # let go before the next image is read (HRF: one in memory at a time)


def seeded_by(*prefix) -> Callable[[int, str, str], int]:
    """Seeds (prefix, seed, mode, name): for val exactly napari_airm.data.ValCases' seeds, so its
    perturb / lowres masks are those of every earlier val number."""
    return lambda seed, mode, name: _seed(*prefix, seed, mode, name)


def folder_set(key: str, title: str, root: Path, names: list[str] | None, limit: int | None,
               seed_of: Callable, transform: Callable | None = None) -> CaseSet:
    """Pairs of an images/ + masks/ folder (optionally only ``names``), read when iterated."""
    from napari_airm.data import find_pairs, read_pair

    pairs = find_pairs(root)
    if names is not None:
        keep = set(names)
        pairs = [p for p in pairs if p.name in keep]
    pairs = pairs[:limit]

    def gen():
        for pair in pairs:
            image, gt = read_pair(pair)
            yield (transform(pair.name, image, gt) if transform else (pair.name, image, gt))
            del image, gt
    return CaseSet(key, title, seed_of, len(pairs), gen)


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


def upscale_pair(image: np.ndarray, gt: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-UHR: bicubic image; the mask blurred (σ ≈ 1 px), upscaled bilinearly, thresholded."""
    h, w = gt.shape
    size = (w * scale, h * scale)
    big = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)
    soft = cv2.GaussianBlur(gt.astype(np.float32), (0, 0), 1.0)
    big_gt = cv2.resize(soft, size, interpolation=cv2.INTER_LINEAR) > 0.5
    return big, big_gt


def extra_folders(root: Path, which: str | None) -> list[Path]:
    base = root / "extra"
    if which:
        return [base / which]
    return sorted(p for p in base.iterdir() if (p / "images").is_dir()) if base.is_dir() else []


def build_sets(args, names: list[str], notes_out: list[str]) -> list[CaseSet]:
    """The requested sets, in the order given; ``extra`` becomes one set per folder."""
    from napari_airm.data import find_pairs

    out = []
    lim = args.limit
    for name in names:
        if name == "val":
            out.append(folder_set("val", f"val: {args.data} ({'first ' + str(lim) if lim else 'all'} "
                                  "images)", args.data, None, lim, seeded_by("val")))
        elif name == "uhr":
            limit = lim if lim is not None else 20
            scale = args.uhr_scale

            def up(n, image, gt, scale=scale):
                big, big_gt = upscale_pair(image, gt, scale)
                return f"{n}@x{scale}", big, big_gt
            # seeded by the val name and the scale, as in every earlier pseudo-UHR number
            uhr_seed = (lambda seed, mode, name, scale=scale:
                        _seed("uhr", seed, scale, mode, name.rpartition("@x")[0]))
            out.append(folder_set("uhr", f"PSEUDO-UHR: val images upscaled x{scale} (first {limit}); "
                                  "not real UHR photographs", args.data, None, limit, uhr_seed, up))
        elif name == "unseen":
            pairs, notes = unseen_pairs()
            pairs = pairs[:lim]
            out.append(CaseSet("unseen", f"unseen: {len(pairs)} image(s) from installed packages",
                               seeded_by("unseen"), len(pairs), lambda pairs=pairs: iter(pairs), notes))
        elif name == "hrf":
            root = args.data_root / "hrf"
            total = len(find_pairs(root, check_sizes=False))
            n = min(total, lim) if lim else total
            out.append(folder_set("hrf", f"HRF: {root} (real 3504×2336 fundus photos, vessel masks; "
                                  f"{n} of {total})", root, None, lim, seeded_by("hrf")))
        elif name == "extra" or name.startswith("extra/"):
            is_heldout, rule = _heldout_rule()
            notes_out.append(f"extra held-out rule: {rule}")
            for folder in extra_folders(args.data_root, name.partition("/")[2] or None):
                stems = [p.name for p in find_pairs(folder, check_sizes=False)]
                held = [s for s in stems if is_heldout(s)]
                n = min(len(held), lim) if lim else len(held)
                out.append(folder_set(f"extra/{folder.name}",
                                      f"extra/{folder.name}: held-out pairs ({n} of {len(held)} held "
                                      f"out, {len(stems)} in all)", folder, held, lim,
                                      seeded_by("extra", folder.name)))
        else:
            raise ValueError(f"unknown set {name!r}; choose from {', '.join(SETS)} or extra/<folder>")
    return out


# ----------------------------------------------------------------------------- scoring


def make_refiners(methods, model_refine: Callable | None, grabcut_iterations: int) -> dict:
    from napari_airm.baselines import grabcut_refine

    out = {}
    for m in methods:
        if m == "coarse":
            out[m] = lambda image, coarse: coarse
        elif m == "grabcut":
            out[m] = lambda image, coarse: grabcut_refine(image, coarse, iterations=grabcut_iterations)
        else:
            out[m] = lambda image, coarse, kw=MODEL_VARIANTS[m]: np.asarray(
                model_refine(image, coarse, **kw)).astype(bool, copy=False)
    return out


def worst_change(rows: list[dict], base_rows: list[dict], key: str) -> dict | None:
    """The image whose ``key`` (iou / mba) fell most against the coarse mask's."""
    if not rows:
        return None
    deltas = [r[key] - b[key] for r, b in zip(rows, base_rows)]
    i = int(np.argmin(deltas))
    return {"name": rows[i]["name"], "coarse": base_rows[i][key], "refined": rows[i][key],
            "delta": deltas[i]}


def run_mode(case_set: CaseSet, mode: str, methods, refiners, seed: int, quiet: bool) -> dict:
    from tqdm import tqdm

    from napari_airm.metrics import SegmentationScores

    scores = {m: SegmentationScores() for m in methods}
    seconds = {m: [] for m in methods}
    for name, image, coarse, gt in tqdm(cases(case_set, mode, seed), total=case_set.count,
                                        desc=f"{case_set.key}/{mode}", disable=quiet, leave=False,
                                        file=sys.stderr):
        for method in methods:
            t0 = time.perf_counter()
            pred = refiners[method](image, coarse)
            seconds[method].append(time.perf_counter() - t0)
            scores[method].add(pred, gt, name)
            del pred
        del image, coarse, gt  # one image in memory at a time (HRF: 3504×2336)
    base = scores["coarse"].per_image
    out = {}
    for m in methods:
        rows = [{"name": r["name"], "iou": r["iou"], "mba": r["mba"], "seconds": t}
                for r, t in zip(scores[m].per_image, seconds[m])]
        out[m] = {**scores[m].summary(), "sec_per_image": float(np.mean(seconds[m])) if rows else 0.0,
                  "worst_iou": worst_change(rows, base, "iou"), "worst_mba": worst_change(rows, base, "mba"),
                  "per_image": rows}
    return out


def _fmt_worst(w: dict | None) -> str:
    if not w:
        return ""
    return f"{100 * w['delta']:+.2f} {w['name']} ({100 * w['coarse']:.2f} → {100 * w['refined']:.2f})"


def markdown_table(results: dict, method_names: dict[str, str]) -> str:
    lines = ["| coarse masks | method | IoU % | mBA % | ΔIoU | ΔmBA | worst ΔIoU: image (coarse → refined) "
             "| worst ΔmBA: image (coarse → refined) | images | s / image |",
             "|---|---|---:|---:|---:|---:|---|---|---:|---:|"]
    for mode, by_method in results.items():
        base = by_method.get("coarse")
        for method, r in by_method.items():
            d_iou = d_mba = w_iou = w_mba = sec = ""
            if base is not None and method != "coarse":
                d_iou = f"{100 * (r['iou'] - base['iou']):+.2f}"
                d_mba = f"{100 * (r['mba'] - base['mba']):+.2f}"
                w_iou, w_mba = _fmt_worst(r.get("worst_iou")), _fmt_worst(r.get("worst_mba"))
                sec = f"{r['sec_per_image']:.2f}"
            lines.append(f"| {mode} | {method_names.get(method, method)} | {100 * r['iou']:.2f} | "
                         f"{100 * r['mba']:.2f} | {d_iou} | {d_mba} | {w_iou} | {w_mba} | "
                         f"{r['images']} | {sec} |")
    return "\n".join(lines)


def good_mask_line(worst: dict | None, tolerance: float = GOOD_MASK_TOLERANCE) -> tuple[bool, str]:
    """``every image refined IoU >= coarse IoU - 0.5: yes/no (worst: NAME a -> b)``."""
    ok = worst is None or 100 * worst["delta"] >= -tolerance
    text = f"every image refined IoU >= coarse IoU - {tolerance:g}: {'yes' if ok else 'no'}"
    if worst:
        text += f" (worst: {worst['name']} {100 * worst['coarse']:.2f} -> {100 * worst['refined']:.2f})"
    return ok, text


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


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=None,
                   help=f"data root holding duts-tr/, hrf/, extra/ (default ${DATA_ENV}, else "
                        f"{DEFAULT_DATA_ROOT})")
    p.add_argument("--data", type=Path, default=None,
                   help="validation folder with images/ and masks/ (default DATA_ROOT/duts-tr/val)")
    p.add_argument("--sets", help=f"comma-separated sets: {','.join(SETS)}, extra/<folder> "
                                  "(default val; combined with --val/--unseen/--uhr)")
    p.add_argument("--modes", help=f"comma-separated coarse-mask modes: {','.join(MODES)} "
                                   f"(default {','.join(DEFAULT_MODES)})")
    p.add_argument("--check-good-masks", action="store_true",
                   help=f"modes {','.join(GOOD_MASK_MODES)} (unless --modes is given) and a final "
                        "yes/no per method: every image's IoU within "
                        f"{GOOD_MASK_TOLERANCE:g} points of the coarse mask's")
    p.add_argument("--limit", type=int,
                   help="first N images of every set only (default: all; --uhr: 20)")
    p.add_argument("--model", help="model folder (default: the bundled model)")
    p.add_argument("--device", help="cpu, cuda, ... (default: CUDA when available)")
    p.add_argument("--tile", type=int, default=1024, help="engine tile side (default 1024)")
    p.add_argument("--passes", type=int, default=1, help="refinement passes (default 1)")
    p.add_argument("--flips", type=int, default=1, choices=(1, 2, 4),
                   help="flip averaging: 1 (off), 2 (left-right), 4 (and up-down); default 1")
    p.add_argument("--methods", default=None,
                   help=f"comma-separated subset of {','.join(METHODS)} (default: all the installed "
                        "engine supports); coarse is always scored, as the reference")
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


def _refine_keywords() -> set[str]:
    """What ``napari_airm.refine`` accepts: its parameters and, where it takes ``**options``,
    the fields of the engine's settings object."""
    import dataclasses

    from napari_airm import api

    known = set(inspect.signature(api.refine).parameters)
    settings = getattr(api, "RefineSettings", None)
    if settings is not None:
        known |= {f.name for f in dataclasses.fields(settings)}
    return known


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def fail(msg: str, code: int = 2) -> int:
        print(f"bench_quality: error: {msg}", file=sys.stderr)
        return code

    args.data_root = (args.data_root or Path(os.environ.get(DATA_ENV) or DEFAULT_DATA_ROOT)).expanduser()
    args.data = args.data or args.data_root / "duts-tr" / "val"

    known = _refine_keywords()
    notes: list[str] = []
    if args.methods is None:
        methods = [m for m in METHODS if set(MODEL_VARIANTS.get(m, {})) <= known]
        skipped = [m for m in METHODS if m not in methods]
        if skipped:
            notes.append(f"skipped {', '.join(skipped)}: this napari_airm.refine has no "
                         f"{'/'.join(sorted(set().union(*(MODEL_VARIANTS[m] for m in skipped)) - known))} "
                         "keyword yet")
    else:
        methods = _csv(args.methods)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        return fail(f"unknown method(s) {unknown}; choose from {','.join(METHODS)}")
    for m in methods:
        missing = sorted(set(MODEL_VARIANTS.get(m, {})) - known)
        if missing:
            return fail(f"method {m} needs refine({', '.join(k + '=...' for k in missing)}), which this "
                        f"napari_airm does not have yet (napari_airm.api.refine takes: "
                        f"{', '.join(sorted(known))}); run the other methods, or update the engine")
    methods = ["coarse"] + [m for m in METHODS if m in methods and m != "coarse"]  # table order

    if args.modes:
        modes = _csv(args.modes)
    else:
        modes = list(GOOD_MASK_MODES if args.check_good_masks else DEFAULT_MODES)
    bad_modes = sorted(set(modes) - set(MODES))
    if bad_modes or not modes:
        return fail(f"unknown mode(s) {bad_modes}; choose from {','.join(MODES)}")

    set_names = _csv(args.sets) if args.sets else []
    set_names += [s for s, on in (("val", args.val), ("unseen", args.unseen), ("uhr", args.uhr))
                  if on and s not in set_names]
    set_names = set_names or ["val"]
    for s in set_names:
        if s not in SETS and not s.startswith("extra/"):
            return fail(f"unknown set {s!r}; choose from {','.join(SETS)} or extra/<folder>")
    needs = {"val": args.data, "uhr": args.data, "hrf": args.data_root / "hrf",
             "extra": args.data_root / "extra"}
    for s in set_names:
        folder = needs.get(s) or (args.data_root / s if s.startswith("extra/") else None)
        if folder is not None and not folder.is_dir():
            return fail(f"set {s}: folder {folder} does not exist (data root: --data-root or ${DATA_ENV})")

    import torch

    from napari_airm import api

    if args.threads:
        torch.set_num_threads(args.threads)
    device = api.resolve_device(args.device)
    model = model_label = None
    model_meta: dict = {}
    if any(m in MODEL_VARIANTS for m in methods):
        try:
            model = api.load_model(args.model, device=str(device))
        except Exception as exc:
            return fail(f"cannot load the model ({exc}); pass --model DIR or --methods coarse,grabcut", 1)
        from napari_airm.model.io import default_model_path, read_config

        folder = Path(args.model) if args.model else default_model_path()
        model_label = f"AIRM ({folder.name})"
        try:
            model_meta = {"path": str(folder), **read_config(folder).get("metadata", {})}
        except Exception:
            model_meta = {"path": str(folder)}

    engine_options = {"tile": args.tile, "passes": args.passes, "flips": args.flips}

    def model_refine(image, coarse, **variant):
        return api.refine(image, coarse, model=model, device=str(device), **engine_options, **variant)

    try:
        case_sets = build_sets(args, set_names, notes)
    except Exception as exc:
        return fail(str(exc))

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
        f"- data root: {args.data_root}; sets: {', '.join(c.key for c in case_sets)}; coarse modes: "
        f"{', '.join(modes)} (seed {args.seed})",
        "- IoU: total intersection / total union over the set; mBA: CascadePSP's mean boundary "
        "accuracy, averaged over images; Δ: change against the coarse input (percentage points); "
        "worst: the image whose IoU (mBA) fell most against its coarse mask",
        *(f"- {n}" for n in notes),
    ]
    print("\n".join(header))
    variant_suffix = ((f", {args.passes} passes" if args.passes > 1 else "")
                      + (f", {args.flips} flips" if args.flips > 1 else ""))
    names = {"coarse": "coarse input", "grabcut": f"OpenCV GrabCut ({args.grabcut_iterations} it.)",
             **{m: f"{model_label or 'model'} {m}: {VARIANT_LABELS[m]}{variant_suffix}"
                for m in MODEL_VARIANTS}}
    report = {"command": command, "code": _git_revision(), "device": str(device), "model": model_meta,
              "data_root": str(args.data_root), "methods": methods, "modes": modes, "seed": args.seed,
              "passes": args.passes, "flips": args.flips,
              "model_variants": {m: {k: v for k, v in MODEL_VARIANTS[m].items()} for m in methods
                                 if m in MODEL_VARIANTS},
              "good_mask_tolerance": GOOD_MASK_TOLERANCE, "notes": notes, "sets": {}}

    refiners = make_refiners(methods, model_refine, args.grabcut_iterations)
    checks: dict[str, list] = {m: [] for m in methods if m != "coarse"}  # (set, mode, worst)
    for cs in case_sets:
        if cs.notes is not None:
            print(f"\n## {cs.key} sources\n")
            for note in cs.notes:
                print(f"- {note}")
        if cs.count == 0:
            print(f"\n## {cs.title}\n\nno images; nothing to score")
            report["sets"][cs.key] = {"title": cs.title, "results": None,
                                      **({"sources": cs.notes} if cs.notes is not None else {})}
            continue
        t0 = time.perf_counter()
        results: dict = {}
        entry = {"title": cs.title, "results": results,
                 **({"sources": cs.notes} if cs.notes is not None else {})}
        report["sets"][cs.key] = entry
        for mode in modes:
            results[mode] = run_mode(cs, mode, methods, refiners, args.seed, args.quiet)
            if args.json:  # written after every mode, so a long run keeps what it has
                args.json.write_text(json.dumps(report, indent=1) + "\n")
        print(f"\n## {cs.title}\n")
        print(markdown_table(results, names))
        lines = []
        for mode in modes:
            if mode not in GOOD_MASK_MODES:
                continue
            for m in checks:
                worst = results[mode][m]["worst_iou"]
                ok, text = good_mask_line(worst)
                checks[m].append((cs.key, mode, worst, ok))
                lines.append(f"- {mode}, {m}: {text}")
                results[mode][m]["good_mask_ok"] = ok
        if lines:
            print("\n" + "\n".join(lines))
        print(f"\n({time.perf_counter() - t0:.0f} s)")
        if args.json:
            args.json.write_text(json.dumps(report, indent=1) + "\n")
    if any(checks.values()):
        print(f"\n## good masks stay good ({', '.join(m for m in modes if m in GOOD_MASK_MODES)}; "
              f"all sets above)\n")
        summary = {}
        for m, found in checks.items():
            worst = min(found, key=lambda f: f[2]["delta"] if f[2] else 0.0)
            ok = all(f[3] for f in found)
            w = worst[2]
            where = f"{worst[0]}/{worst[1]}: {w['name']}" if w else ""
            text = (f"every image refined IoU >= coarse IoU - {GOOD_MASK_TOLERANCE:g}: "
                    f"{'yes' if ok else 'no'}"
                    + (f" (worst: {where} {100 * w['coarse']:.2f} -> {100 * w['refined']:.2f})" if w else ""))
            print(f"- {names[m]}: {text}")
            summary[m] = {"ok": ok, "worst": {"set": worst[0], "mode": worst[1], **(w or {})}}
        report["good_masks"] = summary
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
