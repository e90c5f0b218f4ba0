"""Peak memory of the napari process refining a 20,000×20,000 zarr image through the plugin.

    xvfb-run -a python benchmarks/bench_plugin_memory.py [--side 20000] [--model FOLDER]

1. A child process writes ``<workdir>/uhr.zarr`` (RGB image + coarse labels, a 5-level pyramid),
   upscaling the procedural sample band by band (so the writer's memory does not count).
2. This process opens a napari viewer, opens the store through the plugin's reader (a lazy
   multiscale image and lazy multiscale labels), builds the Refine widget's request and runs
   its worker function synchronously, then adds the result layer as the widget does.
3. It prints the peak resident memory (``ru_maxrss``) before and after, and the timings.
The issue's bar: the viewer process stays under 3 GB.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GB = 1024 ** 3


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


class _Upscaled:
    """A (H·f)×(W·f) view of a small array, produced band by band (for ``write_zarr_sample``)."""

    def __init__(self, small, factor: int, nearest: bool):
        import numpy as np

        self.small, self.f, self.nearest = small, factor, nearest
        self.shape = (small.shape[0] * factor, small.shape[1] * factor) + small.shape[2:]
        self.dtype = np.dtype(small.dtype)

    def __getitem__(self, key):
        import cv2

        rows = key[0]
        f = self.f
        y0, y1 = rows.start or 0, min(rows.stop, self.shape[0])
        s0, s1 = max(0, y0 // f - 1), min(self.small.shape[0], -(-y1 // f) + 1)
        band = self.small[s0:s1]
        interp = cv2.INTER_NEAREST if self.nearest else cv2.INTER_LINEAR
        up = cv2.resize(band, (band.shape[1] * f, band.shape[0] * f), interpolation=interp)
        return up[y0 - s0 * f:y1 - s0 * f]


def write_store(path: Path, side: int) -> None:
    """Child process: a side×side store from the sample made at side/4 and upscaled ×4."""
    from napari_airm._reader import write_zarr_sample
    from napari_airm._sample_data import make_sample_labels

    small_side = side // 4
    image, coarse, _ = make_sample_labels(small_side, small_side, seed=0)
    write_zarr_sample(path, _Upscaled(image, 4, nearest=False), _Upscaled(coarse, 4, nearest=True),
                      levels=5, chunks=1024)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=20000)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "airm-bench")
    ap.add_argument("--model", type=Path, default=None, help="model folder (default: bundled)")
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args()

    store = args.workdir / f"uhr-{args.side}.zarr"
    if not (store / "image").exists():
        args.workdir.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        code = ("import sys; sys.path.insert(0, %r); import bench_plugin_memory as b; "
                "b.write_store(__import__('pathlib').Path(%r), %d)"
                % (str(Path(__file__).parent), str(store), args.side))
        subprocess.run([sys.executable, "-c", code], check=True)
        print(f"wrote {store} in {time.perf_counter() - t:.0f} s (child process)", flush=True)

    import napari
    import numpy as np

    from napari_airm.widgets import _layers
    from napari_airm.widgets._models import OTHER
    from napari_airm.widgets.refine import run_refine  # the worker function

    viewer = napari.Viewer(show=False)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-airm", "Refine")
    rss_start = peak_rss()
    t = time.perf_counter()
    viewer.open(str(store), plugin="napari-airm")
    image_layer, mask_layer = viewer.layers[0], viewer.layers[1]
    print(f"opened: image multiscale={image_layer.multiscale} levels={len(image_layer.data)} "
          f"level0={type(image_layer.data[0]).__name__}{tuple(image_layer.data[0].shape)}; "
          f"mask multiscale={mask_layer.multiscale}", flush=True)
    widget.reset_choices()
    widget.image.value = _layers.unwrap(image_layer)
    widget.coarse.value = _layers.unwrap(mask_layer)
    widget.device.value = args.device
    widget.tile.value = args.tile
    if args.model is not None:
        widget.model.value = OTHER
        widget.model_folder.value = args.model
    req = widget.make_request()
    rss_open = peak_rss()
    last = [0.0]

    def report(done, total, info=None):
        now = time.perf_counter()
        if now - last[0] > 10:
            last[0] = now
            print(f"  {done}/{total}  peak RSS {peak_rss() / GB:.2f} GB", flush=True)

    t_ref = time.perf_counter()
    result = run_refine(req, report)
    seconds = time.perf_counter() - t_ref
    widget.apply(req, result)
    napari.qt.get_qapp().processEvents()
    out = viewer.layers[-1]
    changed = int(np.count_nonzero(out.data != np.asarray(_layers.level0(mask_layer)))) if args.side <= 4096 else None
    numbers = {"side": args.side, "tile": args.tile, "device": args.device,
               "peak_rss_gb_after_viewer": rss_start / GB, "peak_rss_gb_after_open": rss_open / GB,
               "peak_rss_gb": peak_rss() / GB, "refine_seconds": seconds,
               "total_seconds": time.perf_counter() - t, "result_layer": out.name,
               "result_dtype": str(out.data.dtype), "changed_pixels": changed}
    print(json.dumps(numbers, indent=2))
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2))
    viewer.close()
    return 0 if numbers["peak_rss_gb"] < 3 else 1


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
