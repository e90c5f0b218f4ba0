"""Keyboard shortcuts of the annotation loop: free in napari, and they do what they say."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_airm.widgets import _layers  # noqa: E402
from napari_airm.widgets import _shortcuts as keys  # noqa: E402
from napari_airm.widgets._refine_job import IN_PLACE, NEW, RefineResult  # noqa: E402
from napari_airm.widgets.refine import ALL, SELECTED  # noqa: E402


def napari_bindings(viewer) -> set[str]:
    """Every key napari itself binds: layer keymaps, the viewer's and the app's (menus)."""
    from napari._app_model import get_app_model
    from napari.layers import Image, Labels, Points, Shapes
    from napari.utils.key_bindings import coerce_keybinding
    from napari.utils.shortcuts import default_shortcuts

    taken = {str(coerce_keybinding(k)) for keys_ in default_shortcuts.values() for k in keys_}
    for cls in (Image, Labels, Points, Shapes):
        taken |= {str(k) for k in cls.class_keymap}
    taken |= {str(kb.keybinding) for kb in get_app_model().keybindings}
    return taken


def test_shortcuts_do_not_clash_with_napari(make_napari_viewer):
    viewer = make_napari_viewer()
    taken = napari_bindings(viewer)
    assert "Ctrl+Z" in taken and "R" in taken  # the list is the real one
    for key in keys.SHORTCUTS:
        assert keys._normalise(key) not in taken, key


def press(qtbot, viewer, key: str):
    """Press ``key`` on the canvas, as a user does."""
    from qtpy.QtCore import Qt

    *mods, letter = key.split("+")
    modifier = Qt.KeyboardModifier.NoModifier
    for mod in mods:
        modifier |= {"Shift": Qt.KeyboardModifier.ShiftModifier,
                     "Alt": Qt.KeyboardModifier.AltModifier}[mod]
    canvas = viewer.window._qt_viewer.canvas.native
    qtbot.keyClick(canvas, getattr(Qt.Key, f"Key_{letter}"), modifier)


@pytest.fixture
def refine_setup(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), name="img", rgb=True)
    coarse = np.zeros((64, 64), np.uint8)
    coarse[10:30, 10:30], coarse[36:60, 36:60] = 1, 2
    layer = viewer.add_labels(coarse.copy(), name="coarse")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-airm", "Refine")
    return viewer, widget, layer, coarse


def test_refine_keys_start_a_run_on_the_right_objects(refine_setup, qtbot, monkeypatch):
    viewer, widget, layer, _ = refine_setup
    runs = []
    monkeypatch.setattr(widget, "run", lambda *a: runs.append(widget.which.value))
    viewer.layers.selection.active = layer
    press(qtbot, viewer, keys.REFINE_SELECTED)
    press(qtbot, viewer, keys.REFINE_ALL)
    assert runs == [SELECTED, ALL]


def _refine_in_place(widget, layer, coarse) -> np.ndarray:
    """Apply an in-place refinement result to ``layer`` as the widget does; the new data."""
    changed = coarse.copy()
    changed[10:14, 10:30] = 0
    idx = np.nonzero(changed != coarse)
    req = type("Req", (), {"mode": IN_PLACE, "target": _layers.unwrap(layer), "source_name": "coarse"})()
    widget.apply(req, RefineResult(indices=idx, values=changed[idx]))
    return changed


def test_undo_key_undoes_an_in_place_refinement(refine_setup, qtbot):
    viewer, widget, layer, coarse = refine_setup
    np.testing.assert_array_equal(layer.data, _refine_in_place(widget, layer, coarse))
    press(qtbot, viewer, keys.UNDO_REFINEMENT)
    np.testing.assert_array_equal(layer.data, coarse)


def test_undo_key_never_undoes_a_later_paint_stroke(refine_setup, qtbot):
    viewer, widget, layer, coarse = refine_setup
    _refine_in_place(widget, layer, coarse)
    layer.data_setitem((np.array([50]), np.array([5])), np.array([7]))  # the user paints
    press(qtbot, viewer, keys.UNDO_REFINEMENT)
    assert layer.data[50, 5] == 7 and "edited after the refinement" in widget.status.value


def test_undo_key_removes_a_new_refined_layer(refine_setup, qtbot):
    from napari_airm.widgets._refine_job import RefineRequest

    viewer, widget, layer, coarse = refine_setup
    req = RefineRequest(image=None, mode=NEW, source_name="coarse", source_colormap=layer.colormap)
    widget.apply(req, RefineResult(labels=coarse))
    assert "coarse refined" in [x.name for x in viewer.layers]
    viewer.layers.selection.active = layer
    press(qtbot, viewer, keys.UNDO_REFINEMENT)
    assert [x.name for x in viewer.layers] == ["img", "coarse"]
    np.testing.assert_array_equal(layer.data, coarse)


def test_closing_the_widget_unbinds_its_keys(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-airm", "Refine")
    bound = {str(k) for k in viewer.keymap}
    assert {keys._normalise(k) for k in keys.SHORTCUTS} <= bound
    destroyed = []
    widget.destroyed.connect(lambda *_: destroyed.append(True))
    viewer.window.remove_dock_widget(dock)
    widget.deleteLater()
    qtbot.waitUntil(lambda: bool(destroyed), timeout=5000)
    assert not {keys._normalise(k) for k in keys.SHORTCUTS} & {str(k) for k in viewer.keymap}
