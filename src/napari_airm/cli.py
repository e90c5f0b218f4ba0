"""The ``napari-airm`` command line: refine, demo, evaluate, train, refine-many, bench.

Every subcommand is a thin layer over :mod:`napari_airm.api` (and :mod:`napari_airm.io_utils`
for files). A problem the user can fix (a missing file, an unreadable image, a size mismatch,
an existing output) ends the command with exit status 1 and one line on stderr,
``napari-airm: error: ...``; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

PROG = "napari-airm"
DEFAULT_DEMO_DIR = "napari-airm-demo"


class CLIError(Exception):
    """A user-facing error: printed as one line, no traceback."""


# ----------------------------------------------------------------------------- helpers


def _err(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = str(exc.args[0])
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean 'bad input', not 'bug'."""
    return (CLIError, ValueError, OSError, FileExistsError, FileNotFoundError, ModuleNotFoundError)


def _progress(desc: str, quiet: bool) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A tqdm bar driven by ``progress(done, total)`` callbacks (off on non-terminals), shown
    from the first tile on, not while the model loads."""
    from tqdm import tqdm

    bars = []

    def update(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc=desc, unit="tile", disable=True if quiet else None,
                             leave=False, file=sys.stderr))
        bar = bars[0]
        if bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(max(0, done - bar.n))

    def close() -> None:
        for bar in bars:
            bar.close()

    return update, close


def _check_model(path: str | None) -> str | None:
    if path is None:
        return None
    from .model.io import is_model_dir

    p = Path(path)
    if not p.exists():
        raise CLIError(f"model folder {p} does not exist")
    if not is_model_dir(p):
        raise CLIError(f"{p} is not a model folder (it needs config.yaml and weights.safetensors)")
    return str(p)


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


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise CLIError(f"--size must look like HEIGHTxWIDTH, e.g. 3072x4096; got {text!r}") from None
    if h < 64 or w < 64:
        raise CLIError(f"--size must be at least 64x64; got {h}x{w}")
    return h, w


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


def _check_json_target(path: str | os.PathLike, overwrite: bool, inputs=()) -> Path:
    """Refuse a --json FILE that would replace one of the command's inputs (ever) or an
    existing file (without --overwrite); checked before any work is done."""
    from . import io_utils

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


def _write_json(path: str | os.PathLike, data, overwrite: bool = False) -> None:
    from . import io_utils

    with io_utils.atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


# ----------------------------------------------------------------------------- refine


def _reach(text: str):
    """--reach: 'auto', 'none' or a whole number of pixels >= 1."""
    if text in ("auto", "none"):
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"reach must be 'auto', 'none' or a whole number of pixels >= 1, not {text!r}")
    return value


def _engine_options(args):
    """The engine settings every refining command shares (the ``engine`` parent parser)."""
    from .engine.settings import ROUGH_KEEP, RefineSettings

    reach = None if args.reach == "none" else args.reach
    return RefineSettings(reach=reach, solve=not args.no_solve,
                          keep=ROUGH_KEEP if args.rough else None, tile=args.tile, dense=args.dense,
                          passes=args.passes, flips=args.flips)


def cmd_refine(args) -> int:
    from .engine.files import refine_file

    progress, close = _progress("refine", args.quiet)
    try:
        summary = refine_file(args.image, args.mask, args.output, _engine_options(args),
                              model=_check_model(args.model), device=args.device,
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


# ----------------------------------------------------------------------------- demo


def cmd_demo(args) -> int:
    import numpy as np

    from . import io_utils
    from ._sample_data import make_sample
    from .api import evaluate, load_model, refine, resolve_device

    h, w = _parse_size(args.size)
    out_dir = Path(args.output)
    files = {"refined": out_dir / "refined.png", "coarse": out_dir / "coarse.png",
             "ground_truth": out_dir / "ground_truth.png", "image": out_dir / "image.jpg"}
    _check_demo_outputs(out_dir, list(files.values()) + ([Path(args.json)] if args.json else []),
                        args.overwrite)
    if args.json:  # existing or not, it must not be one of the demo's own files
        _check_json_target(args.json, True, inputs=list(files.values()))
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    t_startup = t0 - args.started
    image, coarse, gt = make_sample(h, w, seed=args.seed)
    t_sample = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = load_model(_check_model(args.model), device=str(device))
    t_model = time.perf_counter() - t0
    progress, close = _progress("refine", args.quiet)
    t0 = time.perf_counter()
    try:
        refined = refine(image, coarse, _engine_options(args), model=model, device=str(device),
                         progress=progress)
    finally:
        close()
    t_refine = time.perf_counter() - t0
    refined = np.asarray(refined).astype(bool, copy=False)
    report = evaluate(refined, gt, coarse=coarse, names=["sample"])

    for key, arr in (("refined", refined), ("coarse", coarse), ("ground_truth", gt)):
        with io_utils.atomic_output(files[key], overwrite=True) as tmp:
            io_utils.write_mask(tmp, arr, "binary")
    with io_utils.atomic_output(files["image"], overwrite=True) as tmp:
        io_utils.write_image(tmp, image)
    written = list(files.values())

    model_name = f"model {args.model}" if args.model else "the bundled default model"
    print(f"napari-airm demo: procedural {h}x{w} sample (seed {args.seed}), {model_name}, "
          f"device {device}, tile {args.tile}")
    print()
    print(format_summary(report))
    print()
    t_total = time.perf_counter() - args.started
    print(f"wall time: {t_total:.1f} s from the command's start: start-up {t_startup:.1f} s, "
          f"sample generation {t_sample:.1f} s, model load {t_model:.1f} s, refine {t_refine:.1f} s "
          f"({h * w / 1e6 / max(t_refine, 1e-9):.1f} Mpx/s), scoring and writing "
          f"{t_total - t_startup - t_sample - t_model - t_refine:.1f} s")
    print(f"refined mask: {files['refined']}")
    print(f"also written: {files['image']}, {files['coarse']}, {files['ground_truth']}")
    if not args.rough:
        print("note: the default keeps the given boundary unless the model is sure (a good mask "
              "stays good); this sample's coarse mask is rough: add --rough to let boundaries move")
    if args.json:
        _write_json(args.json, {**report, "size": [h, w], "seed": args.seed, "device": str(device),
                                "seconds": {"total": t_total, "startup": t_startup,
                                            "refine": t_refine, "model_load": t_model,
                                            "sample": t_sample}}, overwrite=True)
        written.append(Path(args.json))
    _record_demo_outputs(out_dir, written)
    return 0


# The demo remembers the files it wrote (size and time) in its folder, so that running it again
# replaces its own results but never a file of the user's without --overwrite.
DEMO_RECORD = ".napari-airm-demo.json"


def _file_stamp(path: Path):
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _check_demo_outputs(out_dir: Path, targets: list[Path], overwrite: bool) -> set[Path]:
    """The targets the demo may replace: its own earlier results; any other existing file is
    refused unless ``overwrite``."""
    from . import io_utils

    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"{out_dir} is a file, not a folder for the demo's results")
    try:
        record = json.loads((out_dir / DEMO_RECORD).read_text())
        record = record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        record = {}
    ours: set[Path] = set()
    for path in targets:
        io_utils.check_replaceable(path)
        if not path.exists():
            continue
        if path.is_file() and record.get(str(path.resolve())) == _file_stamp(path):
            ours.add(path)
        elif not overwrite:
            raise CLIError(f"{path} already exists and was not written by the demo; pass "
                           f"--overwrite to replace it, or choose another folder with -o")
    return ours


def _record_demo_outputs(out_dir: Path, written: list[Path]) -> None:
    record = {str(p.resolve()): _file_stamp(p) for p in written if p.is_file()}
    try:
        (out_dir / DEMO_RECORD).write_text(json.dumps(record, indent=1) + "\n")
    except OSError:  # only a convenience for the next run
        pass


# ----------------------------------------------------------------------------- evaluate


def _read_masks(paths, what: str):
    from . import io_utils

    return [io_utils.read_binary_mask(p) for p in paths]


def cmd_evaluate(args) -> int:
    from . import io_utils
    from .api import evaluate

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
        _check_json_target(args.json, args.overwrite, inputs)
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
        _write_json(args.json, report, overwrite=args.overwrite)
        print(f"\nwrote {args.json}")
    return 0


# ----------------------------------------------------------------------------- train


def _resolve_config(text: str) -> Path:
    p = Path(text)
    if p.is_dir():
        p = p / "config.yaml"
    if p.is_file():
        try:
            p.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise CLIError(f"training config {p} is not a text (UTF-8) file; give a YAML file, "
                           f"a model folder or a bundled recipe name") from None
        except OSError as exc:
            raise CLIError(f"cannot read training config {p}: {exc}") from exc
        return p
    recipes = Path(__file__).resolve().parent / "training" / "recipes"
    candidate = recipes / f"{text}.yaml"
    if candidate.is_file():
        return candidate
    known = ", ".join(sorted(r.stem for r in recipes.glob("*.yaml"))) or "none"
    raise CLIError(f"training config {text} does not exist (give a YAML file, a model folder, "
                   f"or a bundled recipe name: {known})")


def cmd_train(args) -> int:
    from .api import train
    from .data import DataSource

    config = _resolve_config(args.config)
    for spec in args.data or []:  # DIR or DIR=WEIGHT; none: the config's data list
        try:
            root = DataSource.parse(spec).root
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        if not root.is_dir():
            raise CLIError(f"training data folder {root} does not exist")
    if args.val and not Path(args.val).is_dir():
        raise CLIError(f"validation folder {args.val} does not exist")
    init = _check_model(args.init)
    result = train(config, args.data or None, args.out, val=args.val, resume=args.resume, init=init,
                   max_steps=args.max_steps, device=args.device, progress=not args.quiet)
    print(f"trained {result.steps} steps; model written to {result.model_dir}")
    if result.last_val:
        for mode, r in result.last_val.items():
            if isinstance(r, dict) and "refined" in r:
                print(f"validation {mode}:")
                print(format_summary(r))
    return 0


def cmd_average(args) -> int:
    from .training.average import average_models

    for path in args.models:
        _check_model(path)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"{out} is a file, not a folder for the averaged model")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise CLIError(f"{out} exists and is not empty (use --overwrite to replace it)")
    try:
        written = average_models(args.models, out)
    except ValueError as exc:  # fewer than two models, or architectures that differ
        raise CLIError(str(exc)) from exc
    print(f"averaged {len(args.models)} models into {written}")
    return 0


# ----------------------------------------------------------------------------- refine-many


def _collect_pairs(args) -> list[tuple[Path, Path]]:
    from . import io_utils

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


def cmd_refine_many(args) -> int:
    from .api import refine_many

    pairs = _collect_pairs(args)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = refine_many(pairs, out_dir, _engine_options(args), model=_check_model(args.model),
                          scheduler=args.scheduler, device=args.device, overwrite=args.overwrite)
    for p in outputs:
        print(p)
    print(f"refined {len(outputs)} of {len(pairs)} image(s) into {out_dir} in "
          f"{time.perf_counter() - args.started:.1f} s", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- bench


def cmd_bench(args) -> int:
    if args.distributed:
        from .engine.bench_distributed import run_distributed_bench

        run_distributed_bench(size=args.zarr_size[0], tile=args.tile, workers=args.workers,
                              model=_check_model(args.model), device=args.device, out=print)
        return 0
    try:
        from .engine.bench import run_bench, zarr_sizes
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
              model=_check_model(args.model), device=args.device, data_root=args.data_root, out=print)
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


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback on errors")
    engine = argparse.ArgumentParser(add_help=False)
    engine.add_argument("--model", metavar="DIR", help="model folder (default: the bundled model)")
    engine.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: CUDA when available)")
    engine.add_argument("--reach", type=_reach, default="auto", metavar="PX",
                        help="how far the boundary may move from the given one, in pixels; "
                             "outside it the given mask stands exactly ('auto': a share of the "
                             "image size, at most half the local thickness of each object; "
                             "'none': no limit, the network alone decides)")
    engine.add_argument("--no-solve", action="store_true",
                        help="threshold the network instead of the full-resolution boundary solve")
    engine.add_argument("--rough", action="store_true",
                        help="the coarse mask is rough: let the boundary solve follow the network "
                             "and the image instead of keeping the given boundary (the default "
                             "keeps a good mask good)")
    engine.add_argument("--tile", type=_positive_int, default=1024, metavar="N",
                        help="tile side in pixels (memory bound; default 1024)")
    engine.add_argument("--dense", action="store_true",
                        help="decode every pixel, not only the uncertain band (slower; for checks)")
    engine.add_argument("--passes", type=_positive_int, default=1, metavar="N",
                        help="refinement passes: 2 refines the result once more (+0.3 to +0.9 "
                             "mBA on DUTS val photos, twice the last stage's time; default 1)")
    engine.add_argument("--flips", type=int, choices=(1, 2, 4), default=1, metavar="N",
                        help="average over N mirrored views (1, 2: left-right, 4: and up-down): "
                             "+0.1 to +0.8 mBA on DUTS val photos for up to N times the time; default 1")
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    parser = argparse.ArgumentParser(
        prog=PROG, parents=[common],
        description="Refine coarse segmentation masks of ultra-high-resolution images with AIRM.",
        epilog="Run 'napari-airm demo' for a first look; 'napari-airm COMMAND -h' for details.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("refine", parents=[common, engine, quiet], help="refine one image's coarse mask",
                       description="Refine MASK of IMAGE into OUT. Formats: .png .jpg .tif .zarr in; "
                                   ".png .tif .zarr out (zarr is read and written tile by tile). "
                                   "Label images (many ids) stay label images.")
    p.add_argument("image", metavar="IMAGE", help="RGB / grey image: .png .jpg .tif .zarr")
    p.add_argument("mask", metavar="MASK", help="coarse mask: binary (0/1, 0/255, bool) or labels")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="refined mask: .png .tif .zarr")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--labels", default="all", metavar="IDS",
                   help="label ids to refine, e.g. 1,4 (default: all)")
    p.add_argument("--threshold", type=_finite_float, metavar="T",
                   help="binarise the mask at T (foreground where value > T), e.g. for soft masks")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="refine this one image's tiles as dask tasks: 'local' (a cluster of one "
                        "worker per core) or a scheduler address, e.g. tcp://host:8786; OUT must "
                        "be .zarr on storage every worker sees")
    p.set_defaults(func=cmd_refine)

    p = sub.add_parser("demo", parents=[common, engine, quiet],
                       help="refine the bundled procedural UHR sample and score it",
                       description="Refine the bundled procedural ultra-high-resolution sample with "
                                   "the bundled model; print IoU/mBA of coarse vs refined and the "
                                   "wall time; write the masks as PNG.")
    p.add_argument("--size", default="3072x4096", metavar="HxW", help="sample size (default 3072x4096)")
    p.add_argument("--seed", type=int, default=0, help="sample seed (default 0)")
    p.add_argument("-o", "--output", default=DEFAULT_DEMO_DIR, metavar="DIR",
                   help=f"folder for the results (default ./{DEFAULT_DEMO_DIR})")
    p.add_argument("--json", metavar="FILE", help="also write the scores as JSON")
    p.add_argument("--overwrite", action="store_true",
                   help="replace files in DIR that an earlier demo run did not write")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("evaluate", parents=[common], help="IoU and mBA of predictions against ground truth",
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
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("train", parents=[common], help="train or fine-tune a model",
                       description="Train a model from image/mask folders (images/NAME.*, masks/NAME.png).")
    p.add_argument("--config", required=True, metavar="CFG",
                   help="training YAML, a model folder (its recipe), or a bundled recipe name "
                        "(cpu-default)")
    p.add_argument("--data", nargs="+", action="extend", metavar="DIR[=W]",
                   help="training folder(s) (images/, masks/), each with an optional sampling "
                        "weight (DIR=0.6); default: the config's 'data' list")
    p.add_argument("--val", metavar="DIR", help="validation folder (images/, masks/)")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (checkpoints, log, model/)")
    p.add_argument("--max-steps", type=_positive_int, metavar="N", help="override the recipe's steps")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--init", metavar="MODEL", help="fine-tune from this model folder")
    p.add_argument("--device", help="cpu, cuda, ... (default: CUDA when available)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("average", parents=[common], help="average the weights of snapshots of one run",
                       description="Stochastic weight averaging: a model whose weights are the mean "
                                   "of the given model folders (same architecture, e.g. one run's "
                                   "model-stepN snapshots).")
    p.add_argument("models", nargs="+", metavar="MODEL", help="model folders (two or more)")
    p.add_argument("--out", required=True, metavar="DIR", help="the averaged model's folder")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=cmd_average)

    for name, aliases in (("refine-many", ["batch"]),):
        p = sub.add_parser(name, aliases=aliases, parents=[common, engine],
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
        p.set_defaults(func=cmd_refine_many)

    p = sub.add_parser("bench", parents=[common], help="speed and memory of the engine",
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
    p.add_argument("--tile", type=_positive_int, default=1024, metavar="N", help="tile side (default 1024)")
    p.add_argument("--model", metavar="DIR", help="model folder (default: the bundled model)")
    p.add_argument("--device", help="cpu, cuda, ... (default: CUDA when available)")
    p.add_argument("--distributed", action="store_true",
                   help="instead: one zarr scene (--zarr-size N) refined in one "
                        "process and on a LocalCluster of --workers single-threaded workers; time "
                        "ratio, peak memory per worker, task times (engine/bench_distributed.py)")
    p.add_argument("--workers", type=_positive_int, default=2, metavar="N",
                   help="workers of --distributed's LocalCluster (default 2)")
    p.set_defaults(func=cmd_bench)
    return parser


def _finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``UserWarning`` from the engine (e.g. a model out of its domain) as one line on stderr."""
    if issubclass(category, UserWarning):
        print(f"{PROG}: note: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-airm`` command; returns the exit status."""
    started = time.perf_counter()  # reported times count from here: imports and model load included
    parser = build_parser()
    args = parser.parse_args(argv)
    args.started = started
    debug = getattr(args, "debug", False)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        with warnings.catch_warnings():
            if not debug:  # the engine's notes to the user, as one line each
                warnings.showwarning = _show_warning
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:  # e.g. 'napari-airm evaluate ... | head'
        return 0
    except Exception as exc:  # every failure is one line unless --debug
        if debug:
            raise
        if isinstance(exc, _expected_errors()) or type(exc).__name__ in ("InputError", "Cancelled",
                                                                         "TrainingCancelled"):
            _err(_one_line(exc))
        else:
            _err(f"{type(exc).__name__}: {_one_line(exc)} (run with --debug for the traceback)")
        return 1


def console_main() -> None:
    """The installed ``napari-airm`` command: ``main()``, then a quick exit.

    Once torch is imported, tearing its modules down at interpreter exit takes seconds after
    the work is done (measured here: ``import torch`` alone adds 2.4 s to a process's end), so
    the time a command prints would fall short of what its user waits. By then every output
    is complete and renamed into place; the exit handlers run (temporary folders, logging), the
    streams are flushed, and the process ends without the teardown. With threads of its own
    still running (none that are daemons), the command exits the ordinary way.
    """
    import atexit
    import threading

    status = main()
    others = [t for t in threading.enumerate() if t is not threading.current_thread()]
    if "torch" not in sys.modules or any(not t.daemon for t in others):
        sys.exit(status)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe ('... | head') or stream: nothing to keep
            pass
    os._exit(status)


if __name__ == "__main__":  # pragma: no cover
    console_main()
