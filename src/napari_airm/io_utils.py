"""Reading and writing images and masks for the command line and batch jobs.

* PNG / JPEG / BMP are read whole (they cannot be read in parts); TIFF is read lazily through
  tifffile's zarr view when the file is large, whole otherwise; ``.zarr`` stores are opened
  lazily (a zarr array, an OME-Zarr multiscale group — the full-resolution level is used — or a
  group holding exactly one array). Nothing of a lazy source is read until the engine asks for
  a tile.
* Masks come back as ``(array, kind)`` with ``kind`` ``"binary"`` (a bool array, or a lazy
  array of 0/1 values) or ``"labels"`` (an integer label image, ids kept as they are).
* Outputs are written under a temporary name beside the target and renamed when complete, so
  a file or store that carries the final name is always whole (``atomic_output``). Only files
  and zarr stores are ever replaced (a folder of the user's is refused, ``--overwrite`` or
  not), and what a killed run left beside the target is cleared by the next write to it.
* A lazy input names its file in every read error (a damaged zarr chunk, a truncated TIFF).

Every problem with an input raises :class:`InputFileError` (a ``ValueError``) with a message
that names the file, for the command line to print as one line.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np

from .engine.errors import InputError

RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_SUFFIXES = (".zarr",)
IMAGE_SUFFIXES = RASTER_SUFFIXES + TIFF_SUFFIXES + ZARR_SUFFIXES
MASK_OUTPUT_SUFFIXES = (".png",) + TIFF_SUFFIXES + ZARR_SUFFIXES
# TIFFs larger than this on disk are opened lazily (tile by tile) instead of being read whole.
LAZY_TIFF_BYTES = 256 * 2**20
# Masks with more pixels than this are written to TIFF through a disk-backed array.
MEMMAP_PIXELS = 2**28


class InputFileError(InputError):
    """An input or output file that cannot be used; the message names it (a ``ValueError``)."""


class LazyFile:
    """A lazy array read from a file (zarr store, large TIFF) that names the file in every read
    error; everything else (shape, dtype, chunks ...) is the wrapped array's."""

    def __init__(self, array, path, what: str, axes: str | None = None):
        self._array, self._path, self._what = array, path, what
        self.axes = axes  # e.g. "CYX" when the file says so, else None

    @property
    def shape(self):
        return self._array.shape

    @property
    def dtype(self):
        return self._array.dtype

    @property
    def ndim(self):
        return len(self._array.shape)

    def __getitem__(self, key):
        try:
            return self._array[key]
        except MemoryError:
            raise
        except Exception as exc:
            from .engine.source import settle_async_reads

            settle_async_reads()
            raise InputFileError(f"cannot read {self._what} {self._path}: {type(exc).__name__}: "
                                 f"{exc} (a damaged or missing chunk?)") from exc

    def __array__(self, dtype=None, copy=None):
        out = np.asarray(self[...])
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getattr__(self, name):
        if name.startswith("_"):  # no recursion before __init__ (pickle, copy)
            raise AttributeError(name)
        return getattr(self._array, name)

    def __repr__(self) -> str:
        return f"LazyFile({self._path}, shape={tuple(self.shape)}, dtype={self.dtype})"


def suffix_of(path: str | os.PathLike) -> str:
    """The lower-case suffix that decides the format (``.ome.tif`` → ``.tif``; a trailing ``/``
    of a zarr folder is ignored)."""
    return Path(str(path).rstrip("/\\")).suffix.lower()


def is_zarr_path(path: str | os.PathLike) -> bool:
    p = Path(str(path).rstrip("/\\"))
    return p.suffix.lower() in ZARR_SUFFIXES or is_zarr_store(p)


def is_zarr_store(path: str | os.PathLike) -> bool:
    """A folder that zarr wrote: it holds zarr's metadata (v3 ``zarr.json``, v2 ``.zarray`` or
    ``.zgroup``). A folder merely named ``*.zarr`` is not one."""
    p = Path(str(path).rstrip("/\\"))
    return p.is_dir() and any((p / f).is_file() for f in ("zarr.json", ".zarray", ".zgroup"))


def _check_exists(path: Path, what: str) -> None:
    if not path.exists():
        raise InputFileError(f"{what} {path} does not exist")
    if path.is_dir() and not is_zarr_path(path):
        raise InputFileError(f"{what} {path} is a folder, not an image file or a .zarr store")


# ----------------------------------------------------------------------------- reading


# Members looked for in a zarr group (the napari-airm reader's layout: image/ and mask/ or
# labels/, each an array or a group of pyramid levels "0", "1", ...).
ZARR_MEMBERS = {"image": ("image",), "mask": ("mask", "labels")}


def _open_zarr(path: Path, what: str):
    """A zarr array from an array, an OME-Zarr multiscale group, a group holding ``image`` /
    ``mask`` members (arrays or pyramids: level 0 is used) or a one-array group."""
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # zarr raises several types for a broken store
        raise InputFileError(f"cannot open {what} {path} as a zarr store: {exc}") from exc
    axes: list = []
    array = _zarr_array_of(node, path, what, axes=axes)
    return LazyFile(array, path, what, axes=axes[0] if axes else None)


def _ome_axes(multiscale: dict) -> str | None:
    """OME-Zarr axes as letters ("CYX", "TCZYX"), or None when the metadata has none."""
    letters = []
    for a in multiscale.get("axes") or []:
        name = a.get("name", "") if isinstance(a, dict) else str(a)
        kind = a.get("type", "") if isinstance(a, dict) else ""
        letters.append("C" if kind == "channel" or name.lower() == "c" else name.upper()[:1] or "?")
    return "".join(letters) or None


def _zarr_array_of(node, path, what: str, depth: int = 0, axes: list | None = None):
    import zarr

    if isinstance(node, zarr.Array):
        return node
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if multiscales:
        try:
            if axes is not None and isinstance(multiscales[0], dict) and _ome_axes(multiscales[0]):
                axes.append(_ome_axes(multiscales[0]))
            return node[multiscales[0]["datasets"][0]["path"]]
        except Exception as exc:
            raise InputFileError(f"{what} {path}: cannot open its full-resolution level: {exc}") from exc
    members = dict(node.members())
    if depth < 2:
        for key in ZARR_MEMBERS.get(what, ()) + ("0",):
            if key in members:
                return _zarr_array_of(members[key], f"{path}/{key}", what, depth + 1, axes)
    arrays = sorted(name for name, m in members.items() if isinstance(m, zarr.Array))
    if len(arrays) == 1:
        return node[arrays[0]]
    if not members:
        raise InputFileError(f"{what} {path} is an empty zarr group")
    names = sorted(members)
    raise InputFileError(f"{what} {path} is a zarr group with several members ({', '.join(names[:5])}); "
                         f"name one, e.g. {path}/{names[0]}")


def _open_tiff(path: Path, what: str):
    """``(array, axes)``: numpy for small files, lazy for large ones; ``axes`` as tifffile
    reads them from the file ("YXS" RGB, "SYX" planar RGB, "CYX", "ZYX", "QYX" ...)."""
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tif:
            axes = tif.series[0].axes if tif.series else None
            if path.stat().st_size <= LAZY_TIFF_BYTES:
                return tif.asarray(), axes
        import zarr

        store = tifffile.imread(str(path), aszarr=True)
        return LazyFile(_zarr_array_of(zarr.open(store, mode="r"), path, what), path, what,
                        axes), axes
    except InputFileError:
        raise
    except Exception as exc:
        raise InputFileError(f"cannot read {what} {path}: {exc}") from exc


def _open_raster(path: Path, what: str, *, image: bool) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.MAX_IMAGE_PIXELS = None
            mode = im.mode
            if image:
                if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "LA"):
                    im = im.convert("RGBA" if mode in ("PA", "LA") or "transparency" in im.info else "RGB")
                elif mode == "1":
                    im = im.convert("L")
            arr = np.asarray(im)
    except Image.DecompressionBombError as exc:  # pragma: no cover - disabled above
        raise InputFileError(f"cannot read {what} {path}: {exc}") from exc
    except Exception as exc:  # PIL raises many types for broken or foreign files
        raise InputFileError(f"cannot read {what} {path}: not a readable image ({exc})") from exc
    if arr.dtype == np.int32 and image:  # PIL mode "I": 16-bit greys arrive as int32
        if arr.min() >= 0 and arr.max() <= 65535:
            arr = arr.astype(np.uint16)
    return arr


def _squeeze_leading(arr, keep: int, axes: str | None = None):
    """Drop leading singleton axes (e.g. OME's T and Z) until ``keep`` axes remain, lazily.
    Returns ``(array, axes)`` with the axes letters (when known) dropped alike."""
    while arr.ndim > keep and arr.shape[0] == 1:
        if axes and len(axes) == arr.ndim:
            axes = axes[1:]
        arr = arr[0] if isinstance(arr, np.ndarray) else _as_dask(arr)[0]
    return arr, axes


# Leading axes that mean "colour channels" (tifffile: S samples, C channels; OME: c) and
# so may be moved last; any other letter (Z, T, Q, I ...) is a stack of grey planes.
CHANNEL_AXES = ("S", "C")


def _as_dask(arr):
    import dask.array as da

    if isinstance(arr, da.Array):
        return arr
    chunks = getattr(arr, "chunks", None)
    return da.from_array(arr, chunks=chunks if isinstance(chunks, tuple) and chunks else "auto")


def read_image(path: str | os.PathLike):
    """An H×W×C (C = 3 or 4) or H×W image: numpy for small files, lazy (zarr / dask) for zarr
    stores and large TIFFs. Channel-first stores (C×H×W, OME order) are transposed lazily."""
    path = Path(path)
    _check_exists(path, "image")
    suffix = suffix_of(path)
    axes = None
    if is_zarr_path(path):
        arr = _open_zarr(path, "image")
        axes = arr.axes
    elif suffix in TIFF_SUFFIXES:
        arr, axes = _open_tiff(path, "image")
    else:
        arr = _open_raster(path, "image", image=True)
    arr, axes = _squeeze_leading(arr, 3, axes)
    if arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4) and arr.shape[0] in (1, 3, 4):
        if axes and len(axes) == 3 and axes[0] not in CHANNEL_AXES:
            raise InputFileError(f"image {path} is a stack of {arr.shape[0]} grey planes (axes "
                                 f"{axes}, shape {tuple(arr.shape)}), not colour channels; "
                                 f"refine one plane at a time")
        arr = _as_dask(arr).transpose(1, 2, 0) if not isinstance(arr, np.ndarray) else arr.transpose(1, 2, 0)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0] if isinstance(arr, np.ndarray) else _as_dask(arr)[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 2:
        raise InputFileError(f"image {path} has 2 channels (shape {tuple(arr.shape)}); expected "
                             f"H×W×3 (RGB), H×W×4 (RGBA) or H×W (grey)")
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        stack = " (a stack of planes: refine one plane at a time)" if arr.ndim > 3 or (
            arr.ndim == 3 and arr.shape[0] not in (1, 3, 4)) else ""
        raise InputFileError(f"image {path} has shape {tuple(arr.shape)}; expected H×W×3 (RGB), "
                             f"H×W×4 (RGBA) or H×W (grey){stack}")
    check_image_dtype(arr.dtype, path)
    if min(arr.shape[:2]) < 1:
        raise InputFileError(f"image {path} is empty (shape {tuple(arr.shape)})")
    return arr


def check_image_dtype(dtype, path="image") -> None:
    dtype = np.dtype(dtype)
    if dtype in (np.uint8, np.uint16) or np.issubdtype(dtype, np.floating):
        return
    raise InputFileError(f"image {path} has unsupported dtype {dtype}; use uint8, uint16 or float "
                         f"in [0, 1]")


def mask_kind(values: np.ndarray, dtype) -> str:
    """``"binary"`` for bool / {0,1} / {0,255}, else ``"labels"`` (ints) or ``"probability"``."""
    dtype = np.dtype(dtype)
    if dtype == bool:
        return "binary"
    values = np.asarray(values)
    if np.isin(values, (0, 1)).all() or (np.isin(values, (0, 255)).all() and dtype != bool):
        return "binary"
    if np.issubdtype(dtype, np.floating):
        return "probability"
    return "labels"


def _unique_lazy(arr, cap: int = 4096) -> np.ndarray:
    """Distinct values of a lazy array, chunk by chunk (bounded memory); stops at ``cap``."""
    d = _as_dask(arr)
    seen: set = set()
    for block in d.to_delayed().ravel():
        seen.update(np.unique(np.asarray(block.compute())).tolist())
        if len(seen) > cap:
            break
    return np.array(sorted(seen))


def read_mask(path: str | os.PathLike, *, threshold: float | None = None):
    """``(mask, kind)``: a 2-D mask and ``"binary"``, ``"labels"`` or ``"probability"``.

    Binary masks (bool, 0/1, 0/255) come back as bool arrays (lazy sources: a lazy array whose
    values are 0/1). Integer masks with other values are label images and keep their ids;
    float masks in [0, 1] are probabilities. ``threshold`` turns any mask into a binary one
    (foreground where value > threshold). JPEG masks (lossy, so never exact labels) are
    thresholded at 127 unless another threshold is given. RGB(A) mask files whose colour
    channels are equal are read as grey.
    """
    path = Path(path)
    _check_exists(path, "mask")
    if threshold is not None and not np.isfinite(threshold):
        raise InputFileError(f"the threshold must be a finite number, not {threshold}")
    suffix = suffix_of(path)
    lazy = False
    if is_zarr_path(path):
        arr, lazy = _open_zarr(path, "mask"), True
    elif suffix in TIFF_SUFFIXES:
        arr, _ = _open_tiff(path, "mask")
        lazy = not isinstance(arr, np.ndarray)
    else:
        arr = _open_raster(path, "mask", image=False)
        if suffix in (".jpg", ".jpeg") and threshold is None:
            threshold = 127
    arr, _ = _squeeze_leading(arr, 2)
    if arr.ndim == 3 and not lazy and arr.shape[-1] in (3, 4):
        colour = arr[..., :3]
        if (colour == colour[..., :1]).all():
            arr = colour[..., 0]
    if arr.ndim != 2:
        raise InputFileError(f"mask {path} has shape {tuple(arr.shape)}; a mask must be 2-D (H×W) — "
                             f"3-D masks (stacks, colour images) are not supported")
    dtype = np.dtype(arr.dtype)
    if not (dtype == bool or np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise InputFileError(f"mask {path} has unsupported dtype {dtype}; use bool, integers or float")
    if threshold is not None:
        if lazy:
            return (_as_dask(arr) > threshold), "binary"
        return np.asarray(arr) > threshold, "binary"
    if lazy:
        values = _unique_lazy(arr)
    else:
        arr = np.asarray(arr)
        if np.issubdtype(dtype, np.floating) and not np.isfinite(arr).all():
            raise InputFileError(f"mask {path} contains NaN or infinite values")
        values = np.unique(arr)
    kind = mask_kind(values, dtype)
    if kind == "binary":
        if dtype == bool:
            return arr, kind
        on = 255 if values.size and values.max() == 255 else 1
        return ((_as_dask(arr) == on) if lazy else (arr == on)), kind
    if kind == "probability" and (values.min() < 0 or values.max() > 1):
        raise InputFileError(f"mask {path} is float with values outside [0, 1] "
                             f"({values.min():g}..{values.max():g}); threshold it (--threshold)")
    if kind == "labels" and values.size and values.min() < 0:
        raise InputFileError(f"mask {path} has negative label ids; labels must be >= 0")
    return arr, kind


def read_binary_mask(path: str | os.PathLike) -> np.ndarray:
    """A mask for scoring, in memory: binary masks as they are; 8-bit greys with values of 128
    or more are soft masks thresholded at 127 (CascadePSP's rule); other label images count
    every non-zero id as foreground."""
    arr, kind = read_mask(path)
    arr = np.asarray(arr)
    if kind == "binary":
        return arr.astype(bool, copy=False)
    if kind == "probability":
        return arr > 0.5
    if arr.dtype == np.uint8 and arr.max() >= 128:
        return arr > 127
    return arr > 0


# ----------------------------------------------------------------------------- writing


def check_output_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """The output path, after checking the format and that nothing would be overwritten."""
    path = Path(str(path).rstrip("/\\"))
    suffix = suffix_of(path)
    if suffix not in MASK_OUTPUT_SUFFIXES:
        hint = " (JPEG is lossy and would corrupt a mask)" if suffix in (".jpg", ".jpeg") else ""
        raise InputFileError(f"cannot write a mask to {path}{hint}; use .png, .tif or .zarr")
    check_replaceable(path)
    if path.exists() and not overwrite:
        raise InputFileError(f"{path} already exists; pass --overwrite to replace it")
    if not path.parent.exists():
        raise InputFileError(f"output folder {path.parent} does not exist")
    return path


def check_replaceable(path: str | os.PathLike) -> None:
    """Refuse a target that napari-airm must never replace, ``--overwrite`` or not: a folder
    that is not a zarr store (it would be deleted with everything in it)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink() and not is_zarr_store(path):
        raise InputFileError(f"{path} is a folder, not a file or a zarr store; napari-airm does not "
                             f"replace folders (remove it yourself or choose another name)")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _temp_name(path: Path, kind: str) -> Path:
    """``.NAME.KIND-PID-HEX.SUFFIX`` beside ``path``: hidden, and tied to this process so that a
    later run can tell the leftovers of a killed one from the files of a running one."""
    return path.with_name(f".{path.stem}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # someone else's process (or no way to tell): keep it
        return True
    return True


def clean_leftovers(path: str | os.PathLike) -> list[str]:
    """Clear what a killed run left beside ``path`` and say what was done, one line each.

    ``.NAME.partial-*`` (an output, or its work folder, never completed) is removed;
    ``.NAME.old-*`` (the previous output, moved aside for the final rename) is removed when
    ``path`` exists and put back as ``path`` when it does not (the run died between the two
    renames). Entries of a process that still runs are left alone.
    """
    path = Path(str(path).rstrip("/\\"))
    folder = path.parent
    if not folder.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(path.stem)}\.(partial|old)-(?:(\d+)-)?[0-9a-f]{{8}}"
                         rf"{re.escape(path.suffix)}(\.work-.*)?$")
    done: list[str] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    for entry in entries:
        m = pattern.match(entry.name)
        if not m or (m.group(2) and _pid_alive(int(m.group(2)))):
            continue
        try:
            if m.group(1) == "old" and not path.exists() and not path.is_symlink():
                os.replace(entry, path)
                done.append(f"restored {path} from {entry.name}, left by an interrupted run")
            else:
                _remove(entry)
                done.append(f"removed {entry}, left by an interrupted run")
        except OSError as exc:
            done.append(f"could not remove {entry}, left by an interrupted run: {exc}")
    return done


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    On an error (or Ctrl-C) the temporary file or store is removed and ``path`` is untouched.
    Only a file or a zarr store is replaced; leftovers of a killed earlier write to ``path``
    are cleared first (``clean_leftovers``).
    """
    path = Path(str(path).rstrip("/\\"))
    clean_leftovers(path)
    check_replaceable(path)
    if path.exists() and not overwrite:
        raise InputFileError(f"{path} already exists; pass --overwrite to replace it")
    tmp = _temp_name(path, "partial")
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written to {tmp}")
        if path.exists() or path.is_symlink():
            old = _temp_name(path, "old")
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def work_folder(beside: str | os.PathLike):
    """A temporary folder for large intermediate files, named after ``beside`` (an output's
    temporary path) so that ``clean_leftovers`` clears it if the process is killed."""
    beside = Path(beside)
    name = beside.name if beside.name.startswith(".") else _temp_name(beside, "partial").name
    return tempfile.TemporaryDirectory(dir=beside.parent, prefix=f"{name}.work-")


def output_dtype(kind: str, coarse_dtype) -> np.dtype:
    """Binary (and probability) masks give bool outputs; labels keep their integer dtype."""
    return np.dtype(coarse_dtype) if kind == "labels" else np.dtype(bool)


def zarr_chunks(shape, tile: int) -> tuple[int, int]:
    """Chunks that tile the engine's tiles exactly (no chunk is written by two tiles)."""
    c = tile
    for cand in (1024, 512, 256):
        if tile > cand and tile % cand == 0:
            c = cand
            break
    return (min(c, shape[0]), min(c, shape[1]))


def create_zarr(path: str | os.PathLike, shape, dtype, tile: int = 1024):
    """A new zarr array at ``path`` to pass to ``refine(..., out=...)``."""
    import zarr

    return zarr.open_array(str(path), mode="w", shape=tuple(shape), dtype=dtype,
                           chunks=zarr_chunks(shape, tile), fill_value=0)


def create_memmap(folder: str | os.PathLike, shape, dtype) -> np.ndarray:
    """A disk-backed array (a .npy in ``folder``) for outputs too big to hold in memory."""
    return np.lib.format.open_memmap(str(Path(folder) / "mask.npy"), mode="w+", dtype=dtype,
                                     shape=tuple(shape))


def to_file_values(mask: np.ndarray, kind: str) -> np.ndarray:
    """Binary masks as 0/255 uint8 (visible in any viewer); labels as the smallest fitting
    unsigned dtype PNG/TIFF accept."""
    mask = np.asarray(mask)
    if kind != "labels" or mask.dtype == bool:
        return np.where(mask.astype(bool, copy=False), np.uint8(255), np.uint8(0))
    return mask


def write_mask(path: str | os.PathLike, mask, kind: str = "binary", *, tile: int = 1024) -> Path:
    """Write a whole mask to ``path`` (.png, .tif/.tiff or .zarr), format from the suffix.

    Call it inside ``atomic_output`` to get the write-then-rename guarantee; the suffix of
    ``path`` decides the format.
    """
    path = Path(path)
    suffix = suffix_of(path)
    if suffix in ZARR_SUFFIXES:
        arr = np.asarray(mask)
        z = create_zarr(path, arr.shape, output_dtype(kind, arr.dtype) if kind == "labels" else bool, tile)
        z[...] = arr if kind == "labels" else arr.astype(bool, copy=False)
        return path
    if suffix in TIFF_SUFFIXES:
        import tifffile

        with work_folder(path) as work:
            if kind != "labels" and isinstance(mask, np.ndarray) and mask.size > MEMMAP_PIXELS:
                data = _chunked_binary_u8(mask, work)  # 0/255 on disk, never whole in memory
            else:
                data = to_file_values(mask, kind)
            big = data.shape[0] * data.shape[1] > 4096 * 4096
            tifffile.imwrite(str(path), data, tile=(256, 256) if big else None, compression="zlib",
                             bigtiff=data.nbytes > 2**31, photometric="minisblack")
            del data
        return path
    if suffix == ".png":
        from PIL import Image

        data = to_file_values(mask, kind)
        if data.dtype != np.uint8:
            if data.min() < 0 or data.max() > 65535:
                raise InputFileError(f"labels up to {int(data.max())} do not fit a 16-bit PNG; "
                                     f"write .tif or .zarr")
            data = data.astype(np.uint16) if data.max() > 255 else data.astype(np.uint8)
        Image.fromarray(data).save(path, format="PNG")
        return path
    raise InputFileError(f"cannot write a mask to {path}; use .png, .tif or .zarr")


def _chunked_binary_u8(mask: np.ndarray, folder: str | os.PathLike) -> np.ndarray:
    """0/255 uint8 copy of a (memory-mapped) bool mask in ``folder``, converted in row bands."""
    out = np.lib.format.open_memmap(os.path.join(folder, "u8.npy"), mode="w+", dtype=np.uint8,
                                    shape=mask.shape)
    for y in range(0, mask.shape[0], 2048):
        out[y:y + 2048] = np.where(np.asarray(mask[y:y + 2048]).astype(bool), 255, 0)
    return out


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """An RGB / grey image to PNG, JPEG or TIFF (for the demo's files)."""
    path = Path(path)
    if suffix_of(path) in TIFF_SUFFIXES:
        import tifffile

        tifffile.imwrite(str(path), np.asarray(image))
    else:
        from PIL import Image

        kwargs = {"quality": 92} if suffix_of(path) in (".jpg", ".jpeg") else {}
        Image.fromarray(np.asarray(image)).save(path, **kwargs)
    return path


def find_files(folder: str | os.PathLike, suffixes=IMAGE_SUFFIXES) -> dict[str, Path]:
    """Files (and .zarr stores) in ``folder`` by stem; a clear error for duplicates."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(f"{folder} is not a folder")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if suffix_of(p) in suffixes and (p.is_file() or is_zarr_path(p)):
            stem = p.name[: -len(p.suffix)] if p.suffix else p.name
            if stem in found:
                raise InputFileError(f"{folder} holds two files named {stem!r} "
                                     f"({found[stem].name}, {p.name})")
            found[stem] = p
    return found


def match_by_stem(a: str | os.PathLike, b: str | os.PathLike, what=("prediction", "ground truth")):
    """Pairs of files from two folders with the same stem (or the two files themselves).

    Returns ``[(name, path_a, path_b), ...]``; a clear error when nothing matches, and files of
    ``a`` without a partner are reported by the caller through the returned ``missing`` list.
    """
    a, b = Path(a), Path(b)
    for p, name in ((a, what[0]), (b, what[1])):
        if not p.exists():
            raise InputFileError(f"{name} {p} does not exist")
    if a.is_dir() and not is_zarr_path(a) and b.is_dir() and not is_zarr_path(b):
        fa, fb = find_files(a), find_files(b)
        names = sorted(set(fa) & set(fb))
        if not names:
            raise InputFileError(f"no {what[0]} in {a} has a {what[1]} of the same name in {b}")
        missing = sorted(set(fa) ^ set(fb))
        return [(n, fa[n], fb[n]) for n in names], missing
    if (a.is_dir() and not is_zarr_path(a)) != (b.is_dir() and not is_zarr_path(b)):
        raise InputFileError(f"{a} and {b} must both be files or both be folders")
    return [(Path(str(a).rstrip('/')).stem, a, b)], []
