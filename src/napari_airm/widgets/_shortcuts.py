"""Keyboard shortcuts for the annotation loop, bound on the viewer while a Refine widget lives.

Chosen from keys napari 0.9 leaves free (its layer, viewer and menu bindings use plain R, Ctrl+R,
U, Ctrl+Z, Shift+A/L/P/V, Alt+S/C/T, ...; ``tests/test_plugin_shortcuts.py`` checks it):
"""
from __future__ import annotations

from typing import Callable

REFINE_SELECTED = "Shift+R"  # refine the selected object of the coarse mask
REFINE_ALL = "Shift+Alt+R"  # refine the whole coarse mask (all ids)
UNDO_REFINEMENT = "Shift+U"  # undo the last refinement (in place: restore; new layer: remove it)

SHORTCUTS = {REFINE_SELECTED: "refine the selected object",
             REFINE_ALL: "refine the whole coarse mask",
             UNDO_REFINEMENT: "undo the last refinement"}


def bind(widget, viewer, actions: dict[str, Callable[[], object]]) -> None:
    """Bind ``actions`` (key → callable) on ``viewer`` (the newest widget wins) and unbind
    them when Qt destroys ``widget``, unless another widget has bound the key since."""
    bound = {}
    for key, action in actions.items():
        def on_key(_viewer, action=action):
            action()

        viewer.bind_key(key, on_key, overwrite=True)
        bound[key] = on_key

    def unbind(*_):
        keymap = viewer.keymap
        for key, func in bound.items():
            current = {str(k): v for k, v in keymap.items()}.get(_normalise(key))
            if current is func:
                viewer.bind_key(key, None)

    widget.destroyed.connect(unbind)


def _normalise(key: str) -> str:
    from napari.utils.key_bindings import coerce_keybinding

    return str(coerce_keybinding(key))
