"""Scale-out: refine many image/mask files as ``dask.distributed`` tasks.

A ``LocalCluster`` is started by default (one worker process per core, one thread each, since
torch parallelises inside a task); a scheduler address connects to an existing cluster. Each
worker loads the model once and writes its output atomically (temporary name, then rename),
so a failed or interrupted batch never leaves a half-written file under a final name.

A bad input (an unreadable file, a size mismatch) comes back from its task as a value and is
raised here as the one clear error: the workers log no traceback for it. Warnings of the
local cluster (a worker that takes a few seconds to stop) are not shown; errors are.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

from .files import refine_file
from .settings import RefineSettings

class _Failed:
    """What a task returns instead of raising for a bad input (a ``ValueError`` or ``OSError``
    that names its file): raising in a worker makes dask log the traceback."""

    def __init__(self, exc: BaseException):
        self.message = str(exc)
        self.is_value_error = isinstance(exc, ValueError)

    def error(self) -> Exception:
        from ..io_utils import InputFileError

        return InputFileError(self.message) if self.is_value_error else OSError(self.message)


def _refine_task(image_path: str, mask_path: str, out_path: str, model: str | None,
                 device: str | None, overwrite: bool = False,
                 settings: RefineSettings = RefineSettings()):
    """``engine.files.refine_file`` as a dask task (the model is loaded once per worker and
    kept): bad inputs are returned (``_Failed``), bugs raise."""
    try:
        return refine_file(image_path, mask_path, out_path, settings, model=model, device=device,
                           overwrite=overwrite)["output"]
    except (ValueError, OSError) as exc:
        return _Failed(exc)


def output_path(image_path: Path, mask_path: Path, out_dir: Path) -> Path:
    """Output keeps the mask's format (zarr stays zarr), named after the image."""
    suffix = ".zarr" if str(mask_path).rstrip("/").endswith(".zarr") else ".png"
    return out_dir / f"{Path(str(image_path).rstrip('/')).stem}{suffix}"


def refine_files(pairs: Iterable[tuple[str, str]], out_dir: str | os.PathLike, *,
                 model: str | os.PathLike | None = None, scheduler: str | None = None,
                 device: str | None = None, overwrite: bool = False,
                 n_workers: int | None = None,
                 settings: RefineSettings = RefineSettings()) -> list[Path]:
    """Refine (image, mask) file pairs in parallel; returns the output paths in input order."""
    from dask.distributed import Client, LocalCluster, as_completed

    pairs = [(str(i), str(m)) for i, m in pairs]
    if not pairs:
        raise ValueError("no (image, mask) pairs to refine")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    outputs = [output_path(Path(i), Path(m), out) for i, m in pairs]
    if len(set(outputs)) != len(outputs):
        raise ValueError("two images share a file name; outputs would collide in " + str(out))
    existing = [p for p in outputs if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} already exists ({len(existing)} outputs exist); "
                              "pass overwrite=True (--overwrite) to replace them, or choose another "
                              "output folder")
    model_arg = str(model) if model is not None else None
    cluster = None
    if scheduler is None:
        workers = n_workers or max(1, min(len(pairs), os.cpu_count() or 1))
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, env={"OMP_NUM_THREADS": "1"},
                               silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        futures = [client.submit(_refine_task, i, m, str(o), model_arg, device, overwrite, settings,
                                 pure=False, key=f"refine-{k}-{Path(o).name}")
                   for k, ((i, m), o) in enumerate(zip(pairs, outputs))]
        for future in as_completed(futures):
            result = future.result()  # re-raises a bug's error with its message
            if isinstance(result, _Failed):
                raise result.error()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return outputs
