"""napari writer: save a Labels layer as a zarr store or a TIFF (File ▸ Save Selected Layer).

The file formats are the command line's (``io_utils.write_mask``): zarr keeps the layer's dtype
in chunks that tile the image; TIFF is zlib-compressed, tiled when large. The write goes to a
hidden temporary name and is renamed when complete, so a file with the final name is always
whole. An existing *file* is replaced (napari's Save dialog asked first); an existing folder or
zarr store is refused, because the dialog does not ask about folders.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SUFFIXES = (".zarr", ".tif", ".tiff")


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """npe2 single-layer writer for Labels layers; returns the path written."""
    from .io_utils import atomic_output, create_zarr, suffix_of, write_mask

    target = Path(str(path).rstrip("/\\"))
    suffix = suffix_of(target)
    if suffix not in SUFFIXES:
        raise ValueError(f"napari-airm saves Labels as {', '.join(SUFFIXES)}, not '{suffix}'")
    if target.is_dir():
        raise FileExistsError(f"{target} already exists; napari-airm does not replace a folder "
                              f"or zarr store from File ▸ Save: choose a new name or remove it")
    labels = data[0] if meta.get("multiscale") else data  # full resolution only
    with atomic_output(target, overwrite=True) as tmp:
        if suffix == ".zarr" and not isinstance(labels, np.ndarray):
            import dask.array as da

            lazy = labels if isinstance(labels, da.Array) else da.from_array(labels)
            store = create_zarr(tmp, lazy.shape, lazy.dtype)
            da.store(lazy.rechunk(store.chunks), store, lock=False)  # band by band, never whole
        else:
            write_mask(tmp, np.asarray(labels), "labels")
    return [str(target)]
