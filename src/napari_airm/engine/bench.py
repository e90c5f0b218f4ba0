"""``napari-airm bench``: speed and memory of the engine, as ratios measured in one run.

* the real 3492×2328 photo (../shared/data/uhr): megapixels per second of the fast path and
  of ``dense=True``, their ratio and agreement (IoU between the two outputs);
* generated zarr images (default 5,000² and 20,000²): each refined in a fresh subprocess
  reading and writing zarr tile by tile; peak resident memory of that process and its growth
  from the smaller to the larger image.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

DEFAULT_UHR = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "uhr"


# -- a scene that can be generated tile by tile, at any size -------------------------------------
def _radius(theta: np.ndarray, phase: float, wobble: float) -> np.ndarray:
    return (0.33 + wobble * (0.06 * np.sin(5 * theta + phase) + 0.03 * np.sin(13 * theta + 2 * phase)
                             + 0.015 * np.sin(41 * theta + 3 * phase)))


def scene_tile(y0: int, y1: int, x0: int, x1: int, size: int):
    """RGB uint8, ground truth and coarse mask of a window of a size×size synthetic scene: one
    star-shaped object with fine boundary detail; the coarse mask is a smoothed, shifted outline."""
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) / size - 0.5
    r = np.hypot(yy, xx)
    theta = np.arctan2(yy, xx)
    gt = r < _radius(theta, 0.0, 1.0)
    coarse = np.hypot(yy - 0.004, xx + 0.003) < _radius(theta, 0.4, 0.6) + 0.004
    shade = (0.5 + 0.5 * np.sin(40 * xx + 25 * yy)).astype(np.float32)
    rng = np.random.default_rng(y0 * 7919 + x0)
    noise = rng.normal(0, 6, gt.shape).astype(np.float32)
    bg = np.stack([90 + 40 * shade, 110 + 30 * shade, 70 + 20 * shade], -1)
    fg = np.stack([200 - 30 * shade, 80 + 20 * shade, 60 + 10 * shade], -1)
    img = np.where(gt[..., None], fg, bg) + noise[..., None]
    return np.clip(img, 0, 255).astype(np.uint8), gt, coarse


def write_scene_zarr(path: Path, size: int, chunk: int = 1024) -> tuple[Path, Path]:
    """Write image.zarr and coarse.zarr of the synthetic scene, chunk by chunk."""
    import zarr

    image = zarr.open_array(str(path / "image.zarr"), mode="w", shape=(size, size, 3),
                            chunks=(chunk, chunk, 3), dtype="uint8")
    coarse = zarr.open_array(str(path / "coarse.zarr"), mode="w", shape=(size, size),
                             chunks=(chunk, chunk), dtype="uint8")
    for y in range(0, size, chunk):
        for x in range(0, size, chunk):
            img, _, c = scene_tile(y, min(y + chunk, size), x, min(x + chunk, size), size)
            image[y:y + img.shape[0], x:x + img.shape[1]] = img
            coarse[y:y + img.shape[0], x:x + img.shape[1]] = c.astype(np.uint8)
    return path / "image.zarr", path / "coarse.zarr"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _zarr_worker(folder: str, tile: int, model: str | None, device: str | None) -> None:
    """Run in a subprocess: refine the zarr scene in ``folder``; print JSON with peak memory."""
    import zarr

    from ..api import refine

    base = _peak_rss_mb()
    image = zarr.open_array(os.path.join(folder, "image.zarr"), mode="r")
    coarse = zarr.open_array(os.path.join(folder, "coarse.zarr"), mode="r")
    out = zarr.open_array(os.path.join(folder, "refined.zarr"), mode="w", shape=coarse.shape,
                          chunks=coarse.chunks, dtype="bool")
    t = time.perf_counter()
    refine(image, coarse, model=model, device=device, out=out, tile=tile)
    sec = time.perf_counter() - t
    print(json.dumps({"seconds": sec, "peak_rss_mb": _peak_rss_mb(), "baseline_rss_mb": base,
                      "megapixels": image.shape[0] * image.shape[1] / 1e6}))


def bench_zarr(size: int, tile: int, model: str | None, device: str | None, workdir: Path) -> dict:
    folder = workdir / f"scene{size}"
    folder.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    write_scene_zarr(folder, size)
    gen = time.perf_counter() - t
    cmd = [sys.executable, "-c",
           "import sys; from napari_airm.engine.bench import _zarr_worker; "
           "_zarr_worker(sys.argv[1], int(sys.argv[2]), sys.argv[3] or None, sys.argv[4] or None)",
           str(folder), str(tile), model or "", device or ""]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"zarr benchmark subprocess failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(size=size, generate_seconds=gen)
    result["megapixels_per_second"] = result["megapixels"] / result["seconds"]
    return result


def bench_real(image_path: Path, mask_path: Path, tile: int, model, device, dense: bool = True) -> dict:
    from PIL import Image

    from ..api import load_model, refine

    image = np.asarray(Image.open(image_path).convert("RGB"))
    coarse = np.asarray(Image.open(mask_path))
    if coarse.ndim == 3:
        coarse = coarse[..., 0]
    net = load_model(model, device=device)
    mp = image.shape[0] * image.shape[1] / 1e6
    refine(image[:256, :256], coarse[:256, :256], model=net, device=device)  # warm-up
    result = {"image": str(image_path), "shape": list(image.shape[:2]), "tile": tile}
    t = time.perf_counter()
    fast = refine(image, coarse, model=net, device=device, tile=tile)
    result["fast_seconds"] = time.perf_counter() - t
    result["fast_mp_per_s"] = mp / result["fast_seconds"]
    if dense:
        t = time.perf_counter()
        ref = refine(image, coarse, model=net, device=device, tile=tile, dense=True)
        result["dense_seconds"] = time.perf_counter() - t
        result["dense_mp_per_s"] = mp / result["dense_seconds"]
        result["speedup"] = result["dense_seconds"] / result["fast_seconds"]
        union = np.count_nonzero(fast | ref)
        result["fast_vs_dense_iou"] = 1.0 if union == 0 else np.count_nonzero(fast & ref) / union
    result["changed_pixels"] = float(np.mean(fast != (coarse > 127)))
    return result


def run_bench(image: str | None = None, mask: str | None = None, size: int | None = 20000,
              sizes=None, tile: int = 1024, model: str | None = None, device: str | None = None,
              dense: bool = True, workdir: str | None = None,
              out: Callable[[str], None] = print) -> dict:
    """Run the benchmarks and report them through ``out``; returns all numbers.

    The zarr benchmark refines a ``size``² scene and one a quarter of that side (memory growth
    between them), or the given ``sizes``; ``size=None`` and no ``sizes`` skip it."""
    if sizes is None:
        sizes = (max(1024, size // 4), size) if size else ()
    report: dict = {"tile": tile}
    image_path = Path(image) if image else DEFAULT_UHR / "aeroplane.jpg"
    mask_path = Path(mask) if mask else DEFAULT_UHR / "aeroplane_coarse.png"
    if image_path.is_file() and mask_path.is_file():
        r = bench_real(image_path, mask_path, tile, model, device, dense)
        report["real"] = r
        line = (f"real {r['shape'][1]}x{r['shape'][0]}: fast {r['fast_seconds']:.1f} s "
                f"({r['fast_mp_per_s']:.2f} MP/s)")
        if dense:
            line += (f", dense {r['dense_seconds']:.1f} s ({r['dense_mp_per_s']:.2f} MP/s), "
                     f"fast is {r['speedup']:.1f}x faster, fast-vs-dense IoU {100 * r['fast_vs_dense_iou']:.2f}")
        out(line)
    else:
        out(f"real image not found at {image_path}: skipped")
    if sizes:
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            zr = [bench_zarr(s, tile, model, device, Path(tmp)) for s in sizes]
        report["zarr"] = zr
        for r in zr:
            out(f"zarr {r['size']}²: {r['seconds']:.1f} s ({r['megapixels_per_second']:.2f} MP/s), "
                f"peak RSS {r['peak_rss_mb']:.0f} MB (process start {r['baseline_rss_mb']:.0f} MB)")
        if len(zr) >= 2:
            growth = zr[-1]["peak_rss_mb"] / zr[0]["peak_rss_mb"] - 1
            report["memory_growth"] = growth
            out(f"peak memory growth {zr[0]['size']}² -> {zr[-1]['size']}²: {100 * growth:+.1f} %")
    return report
