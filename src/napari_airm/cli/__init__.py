"""The ``napari-airm`` command line: refine, demo, evaluate, train, average, refine-many, bench.

Every subcommand is a thin layer over :mod:`napari_airm.api` (and :mod:`napari_airm.io_utils`
for files), one module each here, each adding its own parser (``add_to``) and running it
(``run_*``). A problem the user can fix (a missing file, an unreadable image, a size mismatch,
an existing output) ends the command with exit status 1 and one line on stderr,
``napari-airm: error: ...``; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from typing import Sequence

from . import bench, demo, evaluate, refine, train
from ._common import PROG, CLIError, err, expected_errors, one_line, parent_parsers

__all__ = ["CLIError", "build_parser", "console_main", "main"]
COMMANDS = (refine, demo, evaluate, train, bench)  # each module adds its subcommands in order


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parents = parent_parsers()
    parser = argparse.ArgumentParser(
        prog=PROG, parents=[parents.common],
        description="Refine coarse segmentation masks of ultra-high-resolution images with AIRM.",
        epilog="Run 'napari-airm demo' for a first look; 'napari-airm COMMAND -h' for details.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_to(sub, parents)
    return parser


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
        err("interrupted")
        return 130
    except BrokenPipeError:  # e.g. 'napari-airm evaluate ... | head'
        return 0
    except Exception as exc:  # every failure is one line unless --debug
        if debug:
            raise
        if isinstance(exc, expected_errors()) or type(exc).__name__ in ("InputError", "Cancelled",
                                                                         "TrainingCancelled"):
            err(one_line(exc))
        else:
            err(f"{type(exc).__name__}: {one_line(exc)} (run with --debug for the traceback)")
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

