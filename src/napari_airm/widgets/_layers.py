"""Layer helpers shared by the widgets: choices, level-0 data, checks, shape rasterising,
undoable writes. No model compute here.
"""
from __future__ import annotations

import re
from typing import Iterable

import numpy as np


class LayerError(ValueError):
    """A layer that cannot be used as chosen; the message says why and what to do."""


def unwrap(obj):
    """The object behind napari's ``PublicOnlyProxy`` (plugins get proxies; a new one on each
    access, so identity and choice matching need the real layer)."""
    return getattr(obj, "__wrapped__", obj)


def follow(widget, viewer, on_layers, on_models=None) -> None:
    """Call ``on_layers`` when the layer list changes (and ``on_models`` when the model registry
    does) for as long as ``widget`` lives; both are disconnected when Qt destroys it."""
    from ._models import registry

    events = [getattr(viewer.layers.events, name) for name in ("inserted", "removed", "moved",
                                                                "reordered")]
    for event in events:
        event.connect(on_layers)
    if on_models is not None:
        registry.changed.connect(on_models)

    def drop(*_):
        for event in events:
            event.disconnect(on_layers)
        if on_models is not None:
            registry.changed.disconnect(on_models)

    widget.destroyed.connect(drop)


def layers_of(viewer, types: tuple[type, ...]) -> list[tuple[str, object]]:
    """(name, layer) choices of the given layer types, top of the layer list first."""
    if viewer is None:
        return []
    layers = [unwrap(layer) for layer in reversed(list(viewer.layers))]
    return [(layer.name, layer) for layer in layers if isinstance(layer, types)]


def layer_choices(widget, *kinds: str):
    """A ComboBox ``choices`` callable: ``widget.viewer``'s layers of these napari layer types
    (by name, e.g. "Labels"), looked up each time the choices are reset."""
    def choices(_w=None):
        import napari.layers

        return layers_of(widget.viewer, tuple(getattr(napari.layers, kind) for kind in kinds))

    return choices


NAME_CHARS = 12  # characters a layer or model name shows before the choice box stops growing


def name_choice(label: str, choices, **kwargs):
    """A ComboBox of user-named things (layers, models). It keeps its width however long a
    name gets (a retrained model's, a file's), so the dock never needs a horizontal scrollbar;
    the list that opens shows the names in full."""
    from magicgui.widgets import ComboBox
    from qtpy.QtWidgets import QComboBox

    box = ComboBox(label=label, choices=choices, **kwargs)
    box.native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    box.native.setMinimumContentsLength(NAME_CHARS)
    return box


def level0(layer):
    """Full-resolution data: level 0 of a multiscale (pyramid) layer, else the data itself."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def plane_shape(layer) -> tuple[int, int]:
    """(H, W) of a 2-D image (grey or RGB/RGBA) or labels layer; a LayerError otherwise."""
    shape = tuple(level0(layer).shape)
    rgb = bool(getattr(layer, "rgb", False))
    if len(shape) == (3 if rgb else 2):
        return int(shape[0]), int(shape[1])
    kind = "RGB image" if rgb else "layer"
    raise LayerError(f"'{layer.name}' is a {len(shape)}-D {kind} of shape {shape}; napari-airm works "
                     f"on 2-D images (H×W grey or H×W×3 RGB): take one plane first")


def check_same_size(image_layer, other_layer) -> tuple[int, int]:
    hw = plane_shape(image_layer)
    if other_layer.__class__.__name__ == "Shapes":
        return hw
    other = plane_shape(other_layer)
    if other != hw:
        raise LayerError(f"size mismatch: '{other_layer.name}' is {other[0]}×{other[1]} but "
                         f"'{image_layer.name}' is {hw[0]}×{hw[1]}; they must cover the same pixels")
    return hw


def is_lazy(array) -> bool:
    return not isinstance(array, np.ndarray)


def any_nonzero(array, value: int | None = None) -> bool:
    """Whether ``array`` (numpy, dask or zarr) holds any non-zero pixel (or any ``value``),
    read chunk by chunk for lazy arrays."""
    if isinstance(array, np.ndarray):
        return bool(np.any(array == value)) if value is not None else bool(array.any())
    import dask.array as da

    arr = array if isinstance(array, da.Array) else da.from_array(array, chunks="auto")
    test = (arr == value) if value is not None else (arr != 0)
    return bool(test.any().compute())


def label_ids(array) -> list[int]:
    """The non-zero values of an in-memory label image (bincount for small unsigned types)."""
    a = np.asarray(array)
    if a.dtype == bool:
        return [1] if a.any() else []
    if a.dtype in (np.uint8, np.uint16):
        return [int(v) for v in np.flatnonzero(np.bincount(a.ravel(), minlength=1)) if v]
    return [int(v) for v in np.unique(a) if v != 0]


def max_value(array) -> int:
    if isinstance(array, np.ndarray):
        return int(array.max())
    import dask.array as da

    arr = array if isinstance(array, da.Array) else da.from_array(array, chunks="auto")
    return int(arr.max().compute())


def _to_image_coords(vertices: np.ndarray, shapes_layer, image_layer) -> np.ndarray:
    """Shape vertices (data coordinates of the Shapes layer) → image data (row, col)."""
    if image_layer is None:
        return vertices[:, -2:]
    out = [image_layer.world_to_data(shapes_layer.data_to_world(v))[-2:] for v in vertices]
    return np.asarray(out, dtype=np.float64)


def rasterise_shapes(shapes_layer, hw: tuple[int, int], image_layer=None,
                     indices: Iterable[int] | None = None) -> np.ndarray:
    """Shapes → label image of size ``hw``: shape i gets id i+1 (later shapes on top).

    Polygons, rectangles and ellipses are filled; lines and paths are drawn with the edge width.
    """
    import cv2

    n = len(shapes_layer.data)
    dtype = np.uint8 if n < 256 else np.uint16 if n < 65536 else np.uint32
    out = np.zeros(hw, dtype)
    # cv2 draws on uint8/uint16/int32 images; draw id by id into a uint16/int32 buffer if needed
    canvas = out if dtype != np.uint32 else out.view(np.int32)
    keep = set(range(n)) if indices is None else set(indices)
    widths = np.broadcast_to(np.asarray(shapes_layer.edge_width, dtype=float), (n,))
    for i, (verts, kind) in enumerate(zip(shapes_layer.data, shapes_layer.shape_type)):
        if i not in keep:
            continue
        rc = _to_image_coords(np.asarray(verts, dtype=float), shapes_layer, image_layer)
        if kind == "ellipse":
            c = (rc[0] + rc[2]) / 2
            a, b = (rc[1] - rc[0]) / 2, (rc[3] - rc[0]) / 2
            t = np.linspace(0, 2 * np.pi, 256, endpoint=False)[:, None]
            rc = c + np.cos(t) * a + np.sin(t) * b
        pts = np.round(rc[:, ::-1] * 16).astype(np.int32)  # (x, y), 4 bits of sub-pixel precision
        if kind in ("line", "path"):
            cv2.polylines(canvas, [pts], False, i + 1, thickness=max(1, int(round(widths[i]))),
                          shift=4)
        else:
            cv2.fillPoly(canvas, [pts], i + 1, shift=4)
    return out


def selected_shape_ids(shapes_layer) -> list[int]:
    return sorted(i + 1 for i in shapes_layer.selected_data)


def apply_in_place(labels_layer, indices: tuple[np.ndarray, ...], values: np.ndarray) -> int:
    """Write ``values`` at ``indices`` as ONE undoable edit (``layer.undo()`` restores it)."""
    if len(indices[0]) == 0:
        return 0
    labels_layer.data_setitem(indices, values)
    return int(len(indices[0]))


def check_in_place(labels_layer) -> None:
    if getattr(labels_layer, "multiscale", False) or not isinstance(labels_layer.data, np.ndarray):
        raise LayerError(f"'{labels_layer.name}' is a lazy or multiscale (pyramid) layer that cannot be "
                         f"edited in place; choose output 'new layer'")


def unique_name(viewer, base: str) -> str:
    names = {layer.name for layer in viewer.layers}
    if base not in names:
        return base
    k = 2
    while f"{base} [{k}]" in names:
        k += 1
    return f"{base} [{k}]"


def safe_filename(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "layer"
