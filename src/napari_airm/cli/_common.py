"""What every subcommand shares: the one-line user error, the progress bar, the checks of
common arguments, and the parent parsers (``--debug``; the engine's settings; ``--quiet``)."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

PROG = "napari-airm"


class CLIError(Exception):
    """A user-facing error: printed as one line, no traceback."""


def err(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = str(exc.args[0])
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def expected_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean 'bad input', not 'bug'."""
    return (CLIError, ValueError, OSError, FileExistsError, FileNotFoundError, ModuleNotFoundError)


def progress_bar(desc: str, quiet: bool) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A tqdm bar driven by ``progress(done, total)`` callbacks (off on non-terminals), shown
    from the first tile on, not while the model loads."""
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit="tile", disable=True if quiet else None,
                       leave=False, file=sys.stderr)
        if bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(max(0, done - bar.n))

    def close() -> None:
        if bar is not None:
            bar.close()

    return update, close


def check_model(path: str | None) -> str | None:
    if path is None:
        return None
    from ..model.io import is_model_dir

    p = Path(path)
    if not p.exists():
        raise CLIError(f"model folder {p} does not exist")
    if not is_model_dir(p):
        raise CLIError(f"{p} is not a model folder (it needs config.yaml and weights.safetensors)")
    return str(p)


def finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def parse_reach(text: str):
    """--reach: 'auto', 'none' or a whole number of pixels >= 1."""
    if text in ("auto", "none"):
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("reach must be 'auto', 'none' or a whole number of pixels "
                                         f">= 1, not {text!r}")
    return value


def engine_settings(args):
    """The engine settings every refining command shares (the ``engine`` parent parser)."""
    from ..engine.settings import ROUGH_KEEP, RefineSettings

    reach = None if args.reach == "none" else args.reach
    return RefineSettings(reach=reach, solve=not args.no_solve,
                          keep=ROUGH_KEEP if args.rough else None, tile=args.tile, dense=args.dense,
                          passes=args.passes, flips=args.flips)


@dataclass(frozen=True)
class Parents:
    """Argument groups subcommands inherit: ``common`` (--debug), ``engine`` (model, device and
    the refinement settings) and ``quiet`` (-q)."""

    common: argparse.ArgumentParser
    engine: argparse.ArgumentParser
    quiet: argparse.ArgumentParser


def parent_parsers() -> Parents:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback on errors")
    engine = argparse.ArgumentParser(add_help=False)
    engine.add_argument("--model", metavar="DIR", help="model folder (default: the bundled model)")
    engine.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: CUDA when available)")
    engine.add_argument("--reach", type=parse_reach, default="auto", metavar="PX",
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
    engine.add_argument("--tile", type=positive_int, default=1024, metavar="N",
                        help="tile side in pixels (memory bound; default 1024)")
    engine.add_argument("--dense", action="store_true",
                        help="decode every pixel, not only the uncertain band (slower; for checks)")
    engine.add_argument("--passes", type=positive_int, default=1, metavar="N",
                        help="refinement passes: 2 refines the result once more (+0.3 to +0.9 "
                             "mBA on DUTS val photos, twice the last stage's time; default 1)")
    engine.add_argument("--flips", type=int, choices=(1, 2, 4), default=1, metavar="N",
                        help="average over N mirrored views (1, 2: left-right, 4: and up-down): "
                             "+0.1 to +0.8 mBA on DUTS val photos for up to N times the time; default 1")
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return Parents(common, engine, quiet)
