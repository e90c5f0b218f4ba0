"""``napari-airm demo``: refine the bundled procedural sample with the bundled model and score it."""
from __future__ import annotations

import json
import time
from pathlib import Path

from ._common import CLIError, Parents, check_model, engine_settings, progress_bar
from ._report import check_json_target, format_summary, write_json

DEFAULT_DEMO_DIR = "napari-airm-demo"


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise CLIError(f"--size must look like HEIGHTxWIDTH, e.g. 3072x4096; got {text!r}") from None
    if h < 64 or w < 64:
        raise CLIError(f"--size must be at least 64x64; got {h}x{w}")
    return h, w


def run_demo(args) -> int:
    import numpy as np

    from .. import io_utils
    from .._sample_data import make_sample
    from ..api import evaluate, load_model, refine, resolve_device

    h, w = _parse_size(args.size)
    out_dir = Path(args.output)
    files = {"refined": out_dir / "refined.png", "coarse": out_dir / "coarse.png",
             "ground_truth": out_dir / "ground_truth.png", "image": out_dir / "image.jpg"}
    _check_demo_outputs(out_dir, list(files.values()) + ([Path(args.json)] if args.json else []),
                        args.overwrite)
    if args.json:  # existing or not, it must not be one of the demo's own files
        check_json_target(args.json, True, inputs=list(files.values()))
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    t0 = time.perf_counter()
    t_startup = t0 - args.started
    image, coarse, gt = make_sample(h, w, seed=args.seed)
    t_sample = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = load_model(check_model(args.model), device=str(device))
    t_model = time.perf_counter() - t0
    progress, close = progress_bar("refine", args.quiet)
    t0 = time.perf_counter()
    try:
        refined = refine(image, coarse, engine_settings(args), model=model, device=str(device),
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
        write_json(args.json, {**report, "size": [h, w], "seed": args.seed, "device": str(device),
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
    from .. import io_utils

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


def add_to(sub, parents: Parents) -> None:
    """The ``demo`` subcommand."""
    p = sub.add_parser("demo", parents=[parents.common, parents.engine, parents.quiet],
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
    p.set_defaults(func=run_demo)
