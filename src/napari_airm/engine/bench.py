"""``napari-airm bench``: speed and memory of the engine, as ratios measured in one run.

* the real 3492×2328 photo (``uhr/aeroplane.jpg`` of the team's data, found through
  ``--data-root``, ``$NAPARI_AIRM_DATA`` or a ``shared/data`` folder beside the working
  directory or the source checkout): megapixels per second of the fast path and of
  ``dense=True``, their ratio and agreement (IoU between the two outputs);
* generated zarr images (default 5,000² and 20,000²): each refined in a fresh Python process
  reading and writing zarr tile by tile; that process's own peak resident memory (VmHWM:
  ``ru_maxrss`` would start at the parent's peak, as Linux carries it across fork and exec)
  and its growth from the smallest to the largest image.
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
from typing import Callable, Iterable

import numpy as np

DATA_ENV = "NAPARI_AIRM_DATA"
PHOTO, PHOTO_MASK = Path("uhr") / "aeroplane.jpg", Path("uhr") / "aeroplane_coarse.png"
PARTS = ("photo", "dense", "zarr")


def data_root_candidates(data_root: str | os.PathLike | None = None) -> list[Path]:
    """Where the team's data may be, in order: the given folder, else ``$NAPARI_AIRM_DATA``,
    else ``shared/data`` in or above the working directory, then beside the source checkout
    (an editable install); an installed package has no data of its own."""
    if data_root:
        return [Path(data_root).expanduser()]
    if os.environ.get(DATA_ENV):
        return [Path(os.environ[DATA_ENV]).expanduser()]
    cwd = Path.cwd()
    places = [cwd / "shared" / "data", cwd.parent / "shared" / "data"]
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "pyproject.toml").is_file():
        places.append(checkout.parent / "shared" / "data")
    return list(dict.fromkeys(places))


def find_photo(data_root: str | os.PathLike | None = None) -> tuple[Path, Path] | list[Path]:
    """The real photo and its coarse mask, or the list of data folders looked in."""
    places = data_root_candidates(data_root)
    for root in places:
        if (root / PHOTO).is_file() and (root / PHOTO_MASK).is_file():
            return root / PHOTO, root / PHOTO_MASK
    return places


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


def peak_rss_mb() -> float:
    """This process's own peak resident memory in MB: VmHWM belongs to the address space made
    at exec, so it starts at this process's start (``ru_maxrss``, the fallback where /proc is
    missing, counts the parent's peak too on Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, else KB


def zarr_worker(folder: str, tile: int, model: str | None, device: str | None) -> dict:
    """Run in a fresh process: refine the zarr scene in ``folder``; peak memory after loading
    the model and at the end."""
    import zarr

    from ..api import load_model, refine

    net = load_model(model, device=device)
    loaded = peak_rss_mb()
    image = zarr.open_array(os.path.join(folder, "image.zarr"), mode="r")
    coarse = zarr.open_array(os.path.join(folder, "coarse.zarr"), mode="r")
    out = zarr.open_array(os.path.join(folder, "refined.zarr"), mode="w", shape=coarse.shape,
                          chunks=coarse.chunks, dtype="bool")
    t = time.perf_counter()
    refine(image, coarse, model=net, device=device, out=out, tile=tile)
    sec = time.perf_counter() - t
    return {"seconds": sec, "peak_rss_mb": peak_rss_mb(), "baseline_rss_mb": loaded,
            "megapixels": image.shape[0] * image.shape[1] / 1e6}


def in_fresh_process(module: str, *args: str) -> dict:
    """Run ``python -m module args`` in a fresh Python process (its own imports and its own
    peak memory) and return the JSON object its last line of output prints."""
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark subprocess {module} {' '.join(args[:1])} failed:\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_zarr(size: int, tile: int, model: str | None, device: str | None, workdir: Path) -> dict:
    """Generate a size² scene as zarr here, refine it in a fresh Python process (its own peak
    memory, its own imports) and return that process's numbers."""
    folder = workdir / f"scene{size}"
    folder.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    write_scene_zarr(folder, size)
    gen = time.perf_counter() - t
    result = in_fresh_process("napari_airm.engine.bench", str(folder), str(tile), model or "",
                              device or "")
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


def zarr_sizes(size: int) -> tuple[int, ...]:
    """``size`` and a quarter of it (memory growth between the two); ``size`` alone when a
    quarter would be under 64 px."""
    return (size // 4, size) if size // 4 >= 64 else (size,)


def run_bench(image: str | None = None, mask: str | None = None, size: int | None = 20000,
              sizes: Iterable[int] | None = None, tile: int = 1024, model: str | None = None,
              device: str | None = None, dense: bool = True, workdir: str | None = None,
              data_root: str | None = None, skip: Iterable[str] = (),
              out: Callable[[str], None] = print) -> dict:
    """Run the benchmarks and report them through ``out``; returns all numbers.

    The photo: ``image``/``mask``, else the team's photo (``find_photo``). The zarr benchmark
    refines the given ``sizes``, else ``zarr_sizes(size)``. ``skip`` leaves out any of
    ``"photo"``, ``"dense"`` (the photo's dense reference run) and ``"zarr"``."""
    skip = set(skip) | (set() if dense else {"dense"})
    unknown = skip - set(PARTS)
    if unknown:
        raise ValueError(f"unknown part(s) to skip: {', '.join(sorted(unknown))} "
                         f"(choose from {', '.join(PARTS)})")
    sizes = tuple(sorted(set(sizes if sizes is not None else zarr_sizes(size) if size else ())))
    report: dict = {"tile": tile}
    if "photo" not in skip:
        report["real"] = _photo_part(image, mask, data_root, tile, model, device,
                                     dense="dense" not in skip, out=out)
    if sizes and "zarr" not in skip:
        report.update(_zarr_part(sizes, tile, model, device, workdir, out=out))
    return report


def _photo_part(image, mask, data_root, tile, model, device, dense: bool, out) -> dict | None:
    if image:
        found = (Path(image), Path(mask) if mask else None)
    else:
        found = find_photo(data_root)
    if isinstance(found, list) or found[1] is None or not found[1].is_file():
        where = (", ".join(str(p) for p in found) if isinstance(found, list)
                 else f"no coarse mask for {found[0]} (--mask)")
        out(f"real photo not found ({where}): skipped; give --data-root DIR or set ${DATA_ENV} "
            f"to the folder holding {PHOTO}, or --image and --mask")
        return None
    r = bench_real(found[0], found[1], tile, model, device, dense)
    line = (f"real {r['shape'][1]}x{r['shape'][0]} ({found[0]}): fast {r['fast_seconds']:.1f} s "
            f"({r['fast_mp_per_s']:.2f} MP/s)")
    if dense:
        line += (f", dense {r['dense_seconds']:.1f} s ({r['dense_mp_per_s']:.2f} MP/s), "
                 f"fast is {r['speedup']:.1f}x faster, fast-vs-dense IoU {100 * r['fast_vs_dense_iou']:.2f}")
    out(line)
    return r


def _zarr_part(sizes, tile, model, device, workdir, out) -> dict:
    results = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for s in sizes:
            r = bench_zarr(s, tile, model, device, Path(tmp))
            results.append(r)
            out(f"zarr {r['size']}²: {r['seconds']:.1f} s ({r['megapixels_per_second']:.2f} MP/s), "
                f"peak RSS {r['peak_rss_mb']:.0f} MB of its own process (after loading the model "
                f"{r['baseline_rss_mb']:.0f} MB)")
    report: dict = {"zarr": results}
    if len(results) >= 2:
        first, last = results[0], results[-1]
        report["memory_growth"] = last["peak_rss_mb"] / first["peak_rss_mb"] - 1
        out(f"peak memory growth {first['size']}² -> {last['size']}² "
            f"({last['megapixels'] / first['megapixels']:.0f}x the pixels): "
            f"{100 * report['memory_growth']:+.1f} %")
    return report


if __name__ == "__main__":  # the fresh process of bench_zarr: FOLDER TILE MODEL DEVICE
    folder, tile, model, device = sys.argv[1:5]
    print(json.dumps(zarr_worker(folder, int(tile), model or None, device or None)))
