"""Colours for a refined layer that can be told apart from the coarse one it came from.

napari colours label id *k* the same in every Labels layer with the default colormap, so a
refined layer drawn over its coarse mask looked identical. ``contrasting_colormap`` picks, from
a fixed set of napari label colormaps, the one whose colours differ most from the coarse
layer's for the ids that occur (deterministic: the same input gives the same colours).
"""
from __future__ import annotations

import numpy as np

SEEDS = tuple(np.round(np.linspace(0.02, 0.98, 25), 3))
MAX_IDS = 64  # ids compared (the first ones); beyond that colours cycle anyway


def colour_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row: the largest RGB channel difference (0 = same colour, 1 = black vs white)."""
    return np.abs(np.asarray(a)[..., :3] - np.asarray(b)[..., :3]).max(axis=-1)


def contrasting_colormap(coarse_colormap, ids):
    """A napari label colormap whose colour for every id in ``ids`` (the first ``MAX_IDS``) is
    as far as possible from ``coarse_colormap``'s colour for the same id."""
    from napari.utils.colormaps import label_colormap

    if coarse_colormap is None or not hasattr(coarse_colormap, "map"):  # e.g. a Shapes layer
        coarse_colormap = default_labels_colormap()
    values = np.asarray(sorted(int(i) for i in ids if int(i) != 0)[:MAX_IDS] or [1])
    theirs = np.asarray(coarse_colormap.map(values))
    best, best_score = None, -1.0
    for seed in SEEDS:
        candidate = label_colormap(49, seed=float(seed))
        score = float(colour_distance(candidate.map(values), theirs).min())
        if score > best_score:
            best, best_score = candidate, score
    return best


def default_labels_colormap():
    """The colours napari gives a new Labels layer."""
    from napari.layers import Labels

    return Labels(np.zeros((1, 1), np.uint8)).colormap
