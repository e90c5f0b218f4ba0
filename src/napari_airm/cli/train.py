"""``napari-airm train`` (train or fine-tune) and ``napari-airm average`` (weight averaging)."""
from __future__ import annotations

from pathlib import Path

from ._common import CLIError, Parents, check_model, positive_int
from ._report import format_summary


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
    recipes = Path(__file__).resolve().parents[1] / "training" / "recipes"
    candidate = recipes / f"{text}.yaml"
    if candidate.is_file():
        return candidate
    known = ", ".join(sorted(r.stem for r in recipes.glob("*.yaml"))) or "none"
    raise CLIError(f"training config {text} does not exist (give a YAML file, a model folder, "
                   f"or a bundled recipe name: {known})")


def run_train(args) -> int:
    from ..api import train
    from ..data import DataSource

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
    init = check_model(args.init)
    result = train(config, args.data or None, args.out, val=args.val, resume=args.resume, init=init,
                   max_steps=args.max_steps, device=args.device, progress=not args.quiet)
    print(f"trained {result.steps} steps; model written to {result.model_dir}")
    if result.last_val:
        for mode, r in result.last_val.items():
            if isinstance(r, dict) and "refined" in r:
                print(f"validation {mode}:")
                print(format_summary(r))
    return 0


def run_average(args) -> int:
    from ..training.average import average_models

    for path in args.models:
        check_model(path)
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


def add_to(sub, parents: Parents) -> None:
    """The ``train`` and ``average`` subcommands."""
    p = sub.add_parser("train", parents=[parents.common], help="train or fine-tune a model",
                       description="Train a model from image/mask folders (images/NAME.*, masks/NAME.png).")
    p.add_argument("--config", required=True, metavar="CFG",
                   help="training YAML, a model folder (its recipe), or a bundled recipe name "
                        "(cpu-default)")
    p.add_argument("--data", nargs="+", action="extend", metavar="DIR[=W]",
                   help="training folder(s) (images/, masks/), each with an optional sampling "
                        "weight (DIR=0.6); default: the config's 'data' list")
    p.add_argument("--val", metavar="DIR", help="validation folder (images/, masks/)")
    p.add_argument("--out", required=True, metavar="DIR", help="run folder (checkpoints, log, model/)")
    p.add_argument("--max-steps", type=positive_int, metavar="N", help="override the recipe's steps")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--init", metavar="MODEL", help="fine-tune from this model folder")
    p.add_argument("--device", help="cpu, cuda, ... (default: CUDA when available)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)

    p = sub.add_parser("average", parents=[parents.common],
                       help="average the weights of snapshots of one run",
                       description="Stochastic weight averaging: a model whose weights are the mean "
                                   "of the given model folders (same architecture, e.g. one run's "
                                   "model-stepN snapshots).")
    p.add_argument("models", nargs="+", metavar="MODEL", help="model folders (two or more)")
    p.add_argument("--out", required=True, metavar="DIR", help="the averaged model's folder")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=run_average)
