"""Run a function off the GUI thread with progress, cancel and clean error reporting.

``fn(report, cancelled)`` runs in a napari worker thread. ``report(done, total, info=None)``
may be called from that thread; it reaches ``on_progress`` on the GUI thread (queued, in
order, before the result). ``cancelled()`` is True once :meth:`BackgroundJob.cancel` was
called. Exceptions never escape as tracebacks: expected ones (bad input, cancel) become a
message, unexpected ones a message plus a log record with the traceback.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from qtpy.QtCore import QObject, Signal

log = logging.getLogger("napari_airm.widgets")


def avoid_llvm_clash() -> None:
    """Keep torch from importing triton once Mesa's OpenGL driver has loaded its own LLVM.

    Both bring an LLVM; loading triton's after Mesa's (llvmpipe under a virtual display, or
    radeonsi) segfaults the napari process. napari-airm never uses ``torch.compile``, so when
    ``libLLVM`` is already mapped and triton is not yet imported, torch runs without triton.
    Call on the GUI thread before anything imports torch or timm.
    """
    if "triton" in sys.modules or not sys.platform.startswith("linux"):
        return
    try:
        with open("/proc/self/maps") as f:
            clash = "libLLVM" in f.read()
    except OSError:
        return
    if clash:
        sys.modules["triton"] = None  # ``import triton`` now raises ImportError: torch skips it
        log.info("napari-airm: OpenGL driver loaded LLVM; torch will run without triton")


def status_label():
    """A status line that wraps and never widens the widget: a long path or message wraps
    (at any character if it must) instead of pushing the dock wider than the screen."""
    from magicgui.widgets import Label
    from qtpy.QtWidgets import QSizePolicy

    label = Label(value="")
    label.native.setWordWrap(True)
    label.native.setMinimumWidth(1)
    label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    return label


@dataclass
class Outcome:
    value: Any = None
    error: str | None = None
    cancelled: bool = False


def _cancel_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = []
    try:
        from ..engine.errors import Cancelled

        types.append(Cancelled)
    except ImportError:  # the engine is not there (yet)
        pass
    try:
        from ..training import TrainingCancelled

        types.append(TrainingCancelled)
    except ImportError:
        pass
    return tuple(types)


def report_failure(status, message: str) -> None:
    """Show an expected failure the napari way: the widget's status line and a notification
    (never a traceback dialog)."""
    from napari.utils.notifications import show_error

    status.value = f"⚠ {message}"
    show_error(f"napari-airm: {message}")


def describe_error(exc: BaseException) -> str:
    """A one-line message for the user (no traceback)."""
    if isinstance(exc, MemoryError):
        return "out of memory: try a smaller tile size or close other layers"
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, (ValueError, FileNotFoundError, FileExistsError, TypeError)):
        return text
    return f"{type(exc).__name__}: {text}"


class _Bridge(QObject):
    progress = Signal(int, int, object)


class BackgroundJob:
    """One background run. Keep a reference until ``on_finish`` was called."""

    def __init__(self, fn: Callable[[Callable, Callable[[], bool]], Any], *,
                 on_finish: Callable[[Outcome], None],
                 on_progress: Callable[[int, int, object], None] | None = None) -> None:
        from napari.qt.threading import create_worker

        avoid_llvm_clash()
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._bridge = _Bridge()
        self._on_progress = on_progress
        self._bridge.progress.connect(self._deliver_progress)
        self._on_finish = on_finish
        self.outcome: Outcome | None = None
        self.worker = create_worker(self._run, fn, _start_thread=False, _ignore_errors=True,
                                    _connect={"returned": self._finished})
        self.worker.finished.connect(self._worker_finished)

    # -- any thread ---------------------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        """Cancel pressed, or napari asked the worker to quit (e.g. the viewer is closing)."""
        return self._cancel.is_set() or self.worker.abort_requested

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def report(self, done: int, total: int, info: object = None) -> None:
        self._bridge.progress.emit(int(done), int(total), info)

    # -- worker thread ------------------------------------------------------------------------
    def _run(self, fn) -> Outcome:
        try:
            value = fn(self.report, lambda: self.cancel_requested)
        except _cancel_types():
            return Outcome(cancelled=True)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message, never a dialog
            if not isinstance(exc, (ValueError, FileNotFoundError, FileExistsError)):
                log.exception("napari-airm background job failed")
            return Outcome(error=describe_error(exc))
        if self.cancel_requested:  # cancelled after the last check: throw the result away
            return Outcome(cancelled=True)
        return Outcome(value=value)

    # -- GUI thread ---------------------------------------------------------------------------
    def _deliver_progress(self, done: int, total: int, info: object) -> None:
        # the result and the reports travel by different signals: a report that arrives after
        # the result must not overwrite what the result showed
        if self._on_progress is not None and not self._done.is_set():
            self._on_progress(done, total, info)

    def start(self) -> "BackgroundJob":
        self.worker.start()
        return self

    def _worker_finished(self) -> None:
        if self.outcome is None:  # napari quit the worker: no result was delivered
            self._finished(Outcome(cancelled=True))
        self._done.set()

    def _finished(self, outcome: Outcome) -> None:
        if self.cancel_requested and outcome.error is None:
            outcome = Outcome(cancelled=True)  # Cancel pressed while the result was on its way
        self.outcome = outcome
        self._done.set()
        try:
            self._on_finish(outcome)
        except Exception as exc:  # noqa: BLE001 - a message, never a traceback dialog
            from napari.utils.notifications import show_error

            log.exception("napari-airm: applying a result failed")
            show_error(f"napari-airm: {describe_error(exc)}")


class JobControls:
    """Run / Cancel / progress plumbing of a widget that runs one ``BackgroundJob`` at a time.

    The widget sets ``start_button`` and ``status`` (``cancel_button`` and ``progress`` if it
    has them) and
    defines ``make_request()`` (raises ``ValueError`` with a message for the user),
    ``job_function(req)`` (what ``BackgroundJob`` runs), ``starting_text(req)`` and
    ``job_finished(req, outcome)`` (GUI thread, buttons already re-enabled).
    """

    _job: BackgroundJob | None = None
    _activity = None  # napari's progress bar in its Activity dock, while a job runs
    clicked_at: float | None = None  # perf_counter() when the run was asked for
    cancelling_text = "cancelling…"
    activity_text = "napari-airm"

    @property
    def running(self) -> bool:
        return self._job is not None and self._job.running

    def run(self, *_) -> BackgroundJob | None:
        """Start the job in the background (returns it, or None on a bad choice)."""
        if self.running:
            return None
        try:
            req = self.make_request()
        except ValueError as exc:
            self._fail(str(exc))
            return None
        self.clicked_at = time.perf_counter()
        self._set_running(True)
        self.status.value = self.starting_text(req)
        self._open_activity()
        self._job = BackgroundJob(self.job_function(req), on_progress=self._on_progress,
                                  on_finish=lambda outcome: self._job_done(req, outcome)).start()
        return self._job

    def cancel(self, *_) -> None:
        if self.running:
            self._job.cancel()
            self.status.value = self.cancelling_text

    def seconds_since_click(self) -> float:
        """Wall time from the click to now: what the user waited, start-up included."""
        return time.perf_counter() - (self.clicked_at or time.perf_counter())

    def _open_activity(self) -> None:
        from napari.utils import progress

        self._close_activity()
        self._activity = progress(total=0, desc=self.activity_text)

    def _close_activity(self) -> None:
        if self._activity is not None:
            self._activity.close()
            self._activity = None

    def _job_done(self, req, outcome: Outcome) -> None:
        self._close_activity()
        self._set_running(False)
        if outcome.error is not None and not outcome.cancelled:
            self._fail(outcome.error)
        else:
            self.job_finished(req, outcome)

    def _show_progress(self, done: int, total: int, text: str | None = None) -> None:
        """``total`` 0: work of unknown length (model loading): a busy bar that moves.

        Call it after setting the status: napari's Activity bar, updated last, may process
        events, and so deliver the result (and its final status) in the middle of this call.
        """
        if self.progress is not None:
            self.progress.max = max(0, total)
            self.progress.value = min(done, max(0, total))
        if self._activity is not None and text is not None:
            self._activity.set_description(text)
        if self._activity is not None and self._activity.total != total:
            self._activity.total = total
        if self._activity is not None:  # None again if the result arrived meanwhile
            self._activity.update(min(done, total) - self._activity.n)

    def _on_progress(self, done: int, total: int, info=None) -> None:
        self._show_progress(done, total)

    def _fail(self, message: str) -> None:
        report_failure(self.status, message)

    cancel_button = None
    progress = None

    def _set_running(self, running: bool) -> None:
        self.start_button.enabled = not running
        if self.cancel_button is not None:
            self.cancel_button.enabled = running
        if self.progress is not None:
            if self.progress.max == 0:  # stop a busy bar
                self.progress.max = 1
            if running:
                self.progress.value = 0
