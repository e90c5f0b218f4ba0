"""``napari-airm bench --distributed``: one image on a LocalCluster against the single process.

The same generated zarr scene (``bench.write_scene_zarr``) is refined twice, each in a fresh
Python process: once as today (one process), once with its tiles as dask tasks on a
LocalCluster of single-threaded worker processes (``engine/distributed.py``). Reported, as
measured in this one run: both wall times and their ratio, peak memory of the single process,
of the caller and of every worker, whether the outputs agree pixel for pixel, and what the
scaling model of docs/performance.md needs: the caller's serial part (mask scan and global
stage), the number of group tasks and their compute seconds, and the boundary length.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .bench import in_fresh_process, peak_rss_mb, write_scene_zarr

COMPARE_BLOCK = 4096  # rows and columns compared at once


def cpu_seconds() -> float:
    """CPU time (user + system) this process has used: unlike wall time, what a run costs
    does not depend on what else shares the machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _refine_single(folder: str, tile: int, model: str | None, device: str | None) -> dict:
    """In a fresh process: today's single-process refinement of the scene into single.zarr."""
    import zarr

    from ..api import load_model, refine
    from ..io_utils import create_zarr

    net = load_model(model, device=device)
    image = zarr.open_array(os.path.join(folder, "image.zarr"), mode="r")
    coarse = zarr.open_array(os.path.join(folder, "coarse.zarr"), mode="r")
    out = create_zarr(os.path.join(folder, "single.zarr"), coarse.shape, bool, tile)
    t, cpu = time.perf_counter(), cpu_seconds()
    refine(image, coarse, model=net, device=device, out=out, tile=tile)
    return {"seconds": time.perf_counter() - t, "cpu_seconds": cpu_seconds() - cpu,
            "peak_rss_mb": peak_rss_mb()}


def _warm_up(model: str | None, device: str | None) -> None:
    from ..api import load_model

    load_model(model, device=device)


def _refine_distributed(folder: str, tile: int, model: str | None, device: str | None,
                        workers: int) -> dict:
    """In a fresh process: the same refinement with a LocalCluster of ``workers`` single-
    threaded worker processes, into distributed.zarr; task times from dask's task stream."""
    import zarr
    from dask.distributed import get_task_stream

    from ..api import load_model, refine
    from ..io_utils import create_zarr
    from .distributed import connect

    load_model(model, device=device)  # cached: the caller's load is not timed, as in _refine_single
    image = zarr.open_array(os.path.join(folder, "image.zarr"), mode="r")
    coarse = zarr.open_array(os.path.join(folder, "coarse.zarr"), mode="r")
    out = create_zarr(os.path.join(folder, "distributed.zarr"), coarse.shape, bool, tile)
    marks: list[float] = []
    t = time.perf_counter()
    with connect("local", workers) as client:
        client.run(_warm_up, model, device)  # imports and the model, as the single process has them
        started = time.perf_counter() - t
        worker_cpu = client.run(cpu_seconds)
        t, cpu = time.perf_counter(), cpu_seconds()
        with get_task_stream(client) as stream:  # workers load the model folder themselves
            refine(image, coarse, model=model, device=device, out=out, tile=tile, scheduler=client,
                   progress=lambda done, total: marks.append(time.perf_counter() - t))
        seconds, cpu = time.perf_counter() - t, cpu_seconds() - cpu
        worker_cpu = {w: c - worker_cpu.get(w, 0.0) for w, c in client.run(cpu_seconds).items()}
        worker_peaks = sorted(client.run(peak_rss_mb).values())
    tasks = [sum(s["stop"] - s["start"] for s in task["startstops"] if s["action"] == "compute")
             for task in stream.data if str(task["key"]).startswith("airm-group")]
    return {"seconds": seconds, "cluster_start_seconds": started,
            "caller_serial_seconds": marks[0] if marks else None,
            "caller_cpu_seconds": cpu, "worker_cpu_seconds": sorted(worker_cpu.values()),
            "caller_peak_rss_mb": peak_rss_mb(), "worker_peak_rss_mb": worker_peaks,
            "tasks": len(tasks), "task_seconds": sorted(tasks)}


def _compare_and_measure(folder: Path) -> dict:
    """Pixels where the two outputs differ, and the coarse mask's boundary length (pixels
    with a 4-neighbour of the other class), block by block."""
    import zarr

    single = zarr.open_array(str(folder / "single.zarr"), mode="r")
    dist = zarr.open_array(str(folder / "distributed.zarr"), mode="r")
    coarse = zarr.open_array(str(folder / "coarse.zarr"), mode="r")
    h, w = coarse.shape
    differ = boundary = 0
    for y in range(0, h, COMPARE_BLOCK):
        for x in range(0, w, COMPARE_BLOCK):
            box = slice(y, min(y + COMPARE_BLOCK, h)), slice(x, min(x + COMPARE_BLOCK, w))
            differ += int(np.count_nonzero(single[box] != dist[box]))
            # one extra row and column: edges between blocks count once
            ext = slice(y, min(y + COMPARE_BLOCK + 1, h)), slice(x, min(x + COMPARE_BLOCK + 1, w))
            m = coarse[ext] > 0
            edge = np.zeros(m.shape, bool)
            edge[:-1] |= m[:-1] != m[1:]
            edge[:, :-1] |= m[:, :-1] != m[:, 1:]
            boundary += int(np.count_nonzero(edge[:box[0].stop - y, :box[1].stop - x]))
    return {"differing_pixels": differ, "boundary_pixels": boundary}


def run_distributed_bench(size: int = 8192, tile: int = 1024, workers: int = 2,
                          model: str | None = None, device: str | None = None,
                          workdir: str | None = None, out: Callable[[str], None] = print) -> dict:
    """Refine a size² scene in one process and on a LocalCluster of ``workers``; report both."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        write_scene_zarr(folder, size)
        report = {"size": size, "tile": tile, "workers": workers,
                  "generate_seconds": time.perf_counter() - t}
        args = [str(folder), str(tile), model or "", device or ""]
        module = "napari_airm.engine.bench_distributed"
        report["single"] = in_fresh_process(module, "single", *args)
        report["distributed"] = in_fresh_process(module, "distributed", *args, str(workers))
        report.update(_compare_and_measure(folder))
    s, d = report["single"], report["distributed"]
    report["time_ratio"] = d["seconds"] / s["seconds"]
    tasks = d["task_seconds"]
    out(f"{size}² zarr, tile {tile}: single process {s['seconds']:.1f} s (peak {s['peak_rss_mb']:.0f} MB); "
        f"{workers} workers {d['seconds']:.1f} s = {report['time_ratio']:.2f}× the single process "
        f"(cluster start and worker imports {d['cluster_start_seconds']:.1f} s not counted)")
    out(f"  CPU seconds: single process {s['cpu_seconds']:.1f}; caller {d['caller_cpu_seconds']:.1f} + "
        f"workers " + " + ".join(f"{c:.1f}" for c in d["worker_cpu_seconds"])
        + f" = {d['caller_cpu_seconds'] + sum(d['worker_cpu_seconds']):.1f}")
    out(f"  peak memory: caller {d['caller_peak_rss_mb']:.0f} MB, workers "
        + ", ".join(f"{m:.0f}" for m in d["worker_peak_rss_mb"]) + " MB")
    out(f"  caller's serial part (mask scan, global stage) {d['caller_serial_seconds']:.1f} s; "
        f"{d['tasks']} group tasks, compute {sum(tasks):.1f} s in all"
        + (f" (median {np.median(tasks):.1f} s, max {max(tasks):.1f} s)" if tasks else ""))
    out(f"  boundary {report['boundary_pixels']} px; outputs differ in {report['differing_pixels']} pixels")
    return report


if __name__ == "__main__":
    mode, folder, tile, model, device = sys.argv[1:6]
    if mode == "single":
        result = _refine_single(folder, int(tile), model or None, device or None)
    else:
        result = _refine_distributed(folder, int(tile), model or None, device or None, int(sys.argv[6]))
    print(json.dumps(result))
