"""One huge image across a ``dask.distributed`` cluster (issue 16).

The global stage runs once, in the caller: its probability map and hypernetwork weights are
small (about 2·``global_side`` pixels a side) and travel to every worker once, inside one
"job" task. The fine stages then run as one task per *group*: a block of first-stage tiles
whose edges are also edges of the output's chunks (or shards), so no two tasks write the same
chunk and no locks are needed. Each task reads its tiles plus halo straight from the input
arrays (a zarr array travels as its store's address, never as pixels), runs exactly the code
the single process runs on those tiles (``BinaryRefiner._level`` from the same global
context), and writes its whole group at once; the output equals the single-process output
pixel for pixel.

Groups the engine would skip (no boundary within reach: ``_level``'s tile skip) are filled by
the caller without a task. For the trust region the caller knows where the given boundary is
from the global stage's own full-resolution read of the mask (``BoundarySurvey``), so this
costs no extra pass over the mask.

Faults: tasks are pure functions of (job, group) and overwrite whole chunks, so a task lost
with its worker is simply run again by dask. The output's ``napari_airm_complete`` attribute
is false from before the first write until the last task has finished: a run stopped by the
user (cancel, Ctrl-C, a failed task) leaves a store that says it is incomplete. A task
already running when the run stops finishes on its worker (dask cannot interrupt it) and
writes its group, unless its output folder is gone by then; with ``scheduler="local"`` the
workers end with the run.
"""
from __future__ import annotations

import contextlib
import logging
import math
import pickle
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .errors import Cancelled, InputError
from .labels import scan_mask
from .reach import resolve_reach
from .refine import (BinaryRefiner, _binary_reader, as_output, foreground_value, open_inputs,
                     refine_array)
from .schedule import Box, Plan, is_uniform
from .settings import RefineSettings
from .source import ImageSource, MaskSource

COMPLETE_ATTR = "napari_airm_complete"
SURVEY_CELL = 64  # full-resolution pixels per cell of the boundary survey (the smallest tile)
MAX_GROUP_TILES = 16  # a group may span at most this many first-stage tiles a side
POLL_SECONDS = 0.2  # how often the caller looks at cancel() while tasks run


# -- where the given boundary is, from the global stage's own read of the mask ---------------------
class BoundarySurvey:
    """A mask reader that passes every box through and records, per SURVEY_CELL² cell,
    whether the cell holds foreground and whether it holds background (thresholded at ½,
    as the engine does). The global stage reads the whole mask once through it; a cell never
    read counts as holding both (the caller then keeps its task, never a wrong fill)."""

    def __init__(self, read_mask: Callable[[Box], np.ndarray], height: int, width: int):
        self.read_mask, self.height, self.width = read_mask, height, width
        shape = (math.ceil(height / SURVEY_CELL), math.ceil(width / SURVEY_CELL))
        self.has_fg = np.zeros(shape, bool)
        self.has_bg = np.zeros(shape, bool)
        self.seen = np.zeros(shape, bool)

    def __call__(self, box: Box) -> np.ndarray:
        values = self.read_mask(box)
        self._record(box, np.asarray(values) > 0.5)
        return values

    def _record(self, box: Box, fg: np.ndarray) -> None:
        y0, y1, x0, x1 = box
        y1, x1 = min(y1, self.height), min(x1, self.width)
        if y0 >= y1 or x0 >= x1:
            return
        fg = fg[:y1 - y0, :x1 - x0]
        c = SURVEY_CELL
        rows = np.unique(np.r_[0, np.arange(-(-y0 // c) * c, y1, c) - y0])
        cols = np.unique(np.r_[0, np.arange(-(-x0 // c) * c, x1, c) - x0])
        cells = (slice(y0 // c, (y1 - 1) // c + 1), slice(x0 // c, (x1 - 1) // c + 1))
        any_fg = np.logical_or.reduceat(np.logical_or.reduceat(fg, rows, axis=0), cols, axis=1)
        all_fg = np.logical_and.reduceat(np.logical_and.reduceat(fg, rows, axis=0), cols, axis=1)
        self.has_fg[cells] |= any_fg
        self.has_bg[cells] |= ~all_fg
        self.seen[cells] = True

    def uniform_value(self, box: Box) -> bool | None:
        """The one class of every pixel in ``box`` (clipped to the image), or None when the
        box holds both classes (or cells the survey never saw)."""
        y0, y1, x0, x1 = max(0, box[0]), min(self.height, box[1]), max(0, box[2]), min(self.width, box[3])
        c = SURVEY_CELL
        cells = (slice(y0 // c, (y1 - 1) // c + 1), slice(x0 // c, (x1 - 1) // c + 1))
        if not self.seen[cells].all():
            return None
        fg, bg = self.has_fg[cells], self.has_bg[cells]
        if not bg.any():
            return True
        if not fg.any():
            return False
        return None


# -- what every task needs, shipped once per worker ------------------------------------------------
@dataclass
class Job:
    """Everything a group task needs besides its box: the inputs (by reference where they
    are stores), the settings, the model (a folder path, or the model itself), the global
    context and the output."""

    token: str
    image: object
    coarse: object
    threshold: float
    settings: RefineSettings
    model: object  # str: a model folder each worker loads; else an AIRM
    device: str | None
    g_prob: torch.Tensor
    g_box: Box
    weights: list
    trust: float
    without_network: bool
    out: object
    fg_value: int


def _unpack_job(payload: bytes) -> Job:
    """The job as a task of its own: if the worker holding it dies, dask recomputes it from
    these bytes (a scattered object would be lost with its worker)."""
    return pickle.loads(payload)


_WORKER = threading.local()  # per worker thread: (job token, refiner, image source, plan)


def _worker_state(job: Job):
    """The refiner of this job on this worker thread, built once (the model is loaded once
    per worker process: ``api.load_model`` caches it)."""
    cached = getattr(_WORKER, "state", None)
    if cached is not None and cached[0] == job.token:
        return cached[1:]
    from ..api import load_model, resolve_device
    device = resolve_device(job.device)
    model = load_model(job.model, device=str(device)) if isinstance(job.model, str) else job.model
    image, mask = ImageSource.wrap(job.image), MaskSource.wrap(job.coarse)
    refiner = BinaryRefiner(model, device, job.settings,
                            resolve_reach(job.settings.reach, mask.height, mask.width))
    plan = refiner.begin(_binary_reader(mask, job.threshold, None), mask.height, mask.width)
    refiner.trust = job.trust
    prev = (job.g_prob.to(device), job.g_box, plan.global_decode_pitch)
    weights = [w.to(device) for w in job.weights]
    _WORKER.state = (job.token, refiner, image, plan, prev, weights)
    return _WORKER.state[1:]


def refine_group(job: Job, group: Box) -> int:
    """One task: refine the output tiles of ``group`` exactly as the single process would and
    write them in one assignment (whole chunks). Returns the number of output tiles."""
    refiner, image, plan, prev, weights = _worker_state(job)
    dtype = np.dtype(job.out.dtype)
    block = np.zeros((group[1] - group[0], group[3] - group[2]), dtype)

    def write(box: Box, values: np.ndarray) -> None:
        block[box[0] - group[0]:box[1] - group[0], box[2] - group[2]:box[3] - group[2]] = \
            as_output(values, dtype, job.fg_value)

    with torch.no_grad():
        if job.without_network:
            for tile in plan.tiles_within(group, plan.tile):
                write(tile, refiner.finish_given(image, tile))
        else:
            refiner._level(image, plan, 0, group, prev, weights, write)
    if _output_exists(job.out):  # a run stopped meanwhile may have removed its output
        job.out[group[0]:group[1], group[2]:group[3]] = block
    return len(plan.tiles_within(group, plan.tile))


def _output_exists(out) -> bool:
    """False when ``out`` lives in a local folder that is gone (its run was stopped and the
    command line removed the unfinished store): writing would create it again."""
    root = getattr(getattr(out, "store", None), "root", None)
    return root is None or Path(root).exists()


# -- the caller ------------------------------------------------------------------------------------
def check_output(out, shape: tuple[int, int]):
    """A distributed run writes into a zarr array every worker can open (a folder or a
    remote store they all see), of the mask's shape."""
    try:
        import zarr
    except ImportError:  # pragma: no cover - zarr is a dependency
        zarr = None
    if out is None or zarr is None or not isinstance(out, zarr.Array):
        raise InputError("a distributed refinement writes into a zarr array that every worker "
                         "can open: pass out=zarr.open_array(PATH, mode='w', shape=..., "
                         "dtype=bool) (e.g. napari_airm.io_utils.create_zarr)")
    if type(out.store).__name__ == "MemoryStore":
        raise InputError("out lives in memory, which other worker processes cannot see; "
                         "create it in a folder (zarr.open_array(PATH, ...))")
    out_shape = tuple(int(s) for s in out.shape)
    if out_shape != shape:
        raise InputError(f"out has shape {out_shape}, but the mask is {shape}")
    return out


def group_side(plan: Plan, out) -> tuple[int, int]:
    """Group side per axis: whole first-stage tiles whose edges are also chunk edges."""
    level0 = plan.level_tile(0) if plan.stage_pitches else plan.tile
    chunks = getattr(out, "shards", None) or out.chunks
    sides = tuple(math.lcm(level0, int(c)) for c in chunks[:2])
    if max(sides) > MAX_GROUP_TILES * level0:
        raise InputError(f"out's chunks {tuple(chunks)} do not line up with the {level0}-pixel "
                         f"tiles of the first stage; create out with chunks that divide "
                         f"{level0} (napari_airm.io_utils.create_zarr does)")
    return sides


def groups_of(plan: Plan, sides: tuple[int, int]) -> list[Box]:
    return [(y, min(y + sides[0], plan.height), x, min(x + sides[1], plan.width))
            for y in range(0, plan.height, sides[0]) for x in range(0, plan.width, sides[1])]


def fill_tiles(refiner, plan: Plan, survey: BoundarySurvey, g_np: np.ndarray, g_box: Box,
               group: Box) -> list[tuple[Box, bool]] | None:
    """What ``_level`` writes into ``group`` when it skips every first-stage tile there (the
    given mask, or the global map's class, far from any boundary): one class per tile, or
    None when some tile needs computing. Answers only what the engine's own skip test would
    answer. Kept as one value per tile, not as pixels: the caller holds the answer for every
    group far from the boundary at once, nearly the whole image on a large one."""
    if refiner.dense:
        return None
    values = []
    e = plan.stage_pitches[0]
    d = plan.global_decode_pitch
    for tile in plan.tiles_within(group, plan.level_tile(0)):
        if refiner.reach is not None:
            # allowed() is empty wherever no pixel of the other class lies within the radius
            r = refiner.reach.radius + 1
            value = survey.uniform_value((tile[0] - r, tile[1] + r, tile[2] - r, tile[3] + r))
        elif is_uniform(g_np, g_box, d, tile, plan.reach(d, e)):
            y, x = (tile[0] - g_box[0]) // d, (tile[2] - g_box[2]) // d
            value = bool(g_np[y, x] > 0.5)
        else:
            value = None
        if value is None:
            return None
        values.append((tile, value))
    return values


def fill_block(group: Box, tiles: list[tuple[Box, bool]]) -> np.ndarray:
    """The pixels of a group ``fill_tiles`` answered, made only when they are written."""
    block = np.zeros((group[1] - group[0], group[3] - group[2]), bool)
    for tile, value in tiles:
        block[tile[0] - group[0]:tile[1] - group[0], tile[2] - group[2]:tile[3] - group[2]] = value
    return block


@contextlib.contextmanager
def connect(scheduler, n_workers: int | None = None):
    """A distributed Client for ``scheduler``: "local" starts a LocalCluster (one single-
    threaded worker process per core, or ``n_workers``) for this run only; an address
    connects to a running scheduler; a Client is used as it is (and left open)."""
    import os

    import dask
    from dask.distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        yield scheduler
        return
    if isinstance(scheduler, str) and scheduler == "local":
        # dask gives its workers MALLOC_TRIM_THRESHOLD_=65536, which also switches off glibc's
        # dynamic mmap threshold: every large tensor is then mapped and faulted in afresh, and
        # the engine took 2.2× the CPU time (docs/performance.md). The engine trims its heap
        # after each stage itself, so its workers keep glibc's defaults.
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
            cluster = LocalCluster(n_workers=n_workers or os.cpu_count() or 1, threads_per_worker=1,
                                   processes=True, dashboard_address=None,
                                   env={"OMP_NUM_THREADS": "1"}, silence_logs=logging.ERROR)
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()
        return
    client = Client(scheduler)
    try:
        yield client
    finally:
        client.close()


def refine_on_cluster(image, coarse, model, *, model_ref, device: torch.device, out, scheduler,
                      settings: RefineSettings | None = None,
                      progress: Callable[[int, int], None] | None = None,
                      cancel: Callable[[], bool] | None = None, n_workers: int | None = None):
    """``napari_airm.refine(..., scheduler=...)``: refine a binary mask of one image with
    its tiles as dask tasks, into the zarr array ``out``; returns ``out``.

    ``model``: the loaded model (the global stage runs here); ``model_ref``: what workers
    load (a model folder) or the model itself. Label images, and images small enough that
    the global stage is already full resolution, have no tile stages to spread: they are
    refined here, in one process, as without a scheduler."""
    settings = settings or RefineSettings()
    img, mask = open_inputs(image, coarse)
    shape = (mask.height, mask.width)
    check_output(out, shape)
    out.attrs[COMPLETE_ATTR] = False
    summary = scan_mask(mask, settings.tile)
    if summary.kind == "labels":
        raise InputError("a distributed refinement takes a binary mask; refine label images "
                         "without a scheduler (object by object, in one process)")
    refiner = BinaryRefiner(model, device, settings, resolve_reach(settings.reach, *shape))
    plan = refiner.plan(*shape)
    if summary.empty or summary.full or not plan.stage_pitches:
        refine_array(image, coarse, model, device=device, settings=settings, out=out,
                     progress=progress, cancel=cancel)
        out.attrs[COMPLETE_ATTR] = True
        return out
    sides = group_side(plan, out)
    survey = BoundarySurvey(_binary_reader(mask, summary.threshold, None), *shape)
    with torch.no_grad():
        refiner.begin(survey, *shape, progress, cancel)
        g_prob, g_box, weights = refiner.global_context(img, plan)
    without_network = refiner.trust == 0.0 and (refiner.reach is not None or refiner.solve)
    if without_network:
        warnings.warn("the model's reading of this image disagrees with the given mask as a "
                      "whole, so its vote is dropped: the mask is kept except where the image's "
                      "edges say otherwise", UserWarning, stacklevel=3)
    fg_value = foreground_value(summary, out.dtype)
    job = Job(uuid.uuid4().hex, image, coarse, summary.threshold, settings,
              model_ref if isinstance(model_ref, torch.nn.Module) else str(model_ref),
              None if device is None else str(device), g_prob.detach().float().cpu(), g_box,
              [w.to("cpu") for w in weights], refiner.trust, without_network, out, fg_value)
    g_np = g_prob[0, 0].float().cpu().numpy()
    done = [refiner._done]
    total = refiner._total

    def advance(n: int) -> None:
        done[0] += n
        if progress:
            progress(done[0], total)

    fills, tasks = [], []
    for group in groups_of(plan, sides):
        tiles = None if without_network else fill_tiles(refiner, plan, survey, g_np, g_box, group)
        (tasks if tiles is None else fills).append((group, tiles))
    with connect(scheduler, n_workers) as client:
        _run_tasks(client, job, tasks, fills, plan, advance, cancel)
    out.attrs[COMPLETE_ATTR] = True
    return out


def _run_tasks(client, job: Job, tasks, fills, plan: Plan, advance, cancel) -> None:
    """Submit the group tasks, write the fills meanwhile, wait for every task (polling
    ``cancel``); whatever stops the wait (cancel, Ctrl-C, a failed task) cancels the rest."""
    job_future = client.submit(_unpack_job, pickle.dumps(job), key=f"airm-job-{job.token}",
                               pure=False)
    futures = [client.submit(refine_group, job_future, group, key=f"airm-group-{job.token}-{k}",
                             pure=False)
               for k, (group, _) in enumerate(tasks)]
    try:
        dtype = np.dtype(job.out.dtype)
        for group, tiles in fills:
            _check(cancel)
            block = fill_block(group, tiles)  # one group's pixels at a time
            job.out[group[0]:group[1], group[2]:group[3]] = as_output(block, dtype, job.fg_value)
            advance(len(plan.tiles_within(group, plan.tile)))
        pending = set(futures)
        while pending:
            _check(cancel)
            finished = {f for f in pending if f.done()}
            if not finished:
                time.sleep(POLL_SECONDS)
                continue
            pending -= finished
            for future in finished:
                advance(future.result())  # a task's error is raised here
    except BaseException:
        client.cancel(futures + [job_future])
        raise


def _check(cancel) -> None:
    if cancel is not None and cancel():
        raise Cancelled("refinement cancelled")
