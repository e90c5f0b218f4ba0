"""The dock fits a 1366×768 laptop screen in napari's default layout: measured, not guessed."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

SCREEN = (1366, 768)
USABLE_HEIGHT = 700  # 768 px less a taskbar and the window's title bar


def settle(qtbot):
    qtbot.wait(50)


def test_airm_dock_fits_a_laptop_screen(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    _dock, airm = viewer.window.add_plugin_dock_widget("napari-airm", "AIRM")
    window = viewer.window._qt_window
    settle(qtbot)
    minimum = window.minimumSizeHint()
    assert minimum.width() <= SCREEN[0] and minimum.height() <= USABLE_HEIGHT, minimum
    window.resize(SCREEN[0], USABLE_HEIGHT)
    settle(qtbot)
    assert window.height() <= USABLE_HEIGHT
    # every tab shows all of its controls without scrolling, and the canvas keeps half the width
    for index in range(airm.tabs.count()):
        airm.tabs.setCurrentIndex(index)
        settle(qtbot)
        area = airm.tabs.widget(index)
        needed = area.widget().sizeHint().height()
        assert needed <= area.viewport().height(), (airm.tabs.tabText(index), needed)
        assert area.verticalScrollBar().maximum() == 0 and area.horizontalScrollBar().maximum() == 0
    assert viewer.window._qt_viewer.canvas.native.width() >= SCREEN[0] // 2
    # a long status (a model path, no spaces to wrap at) wraps or clips, never widens the dock
    long_path = "/home/someone/napari-airm/finetune/run-20261207-104226/train/model" * 2
    for widget in (airm.refine, airm.evaluate, airm.retrain):
        widget.status.value = f"trained 20 steps → model ({long_path}); {long_path}"
    for index in range(airm.tabs.count()):
        airm.tabs.setCurrentIndex(index)
        settle(qtbot)
        assert airm.tabs.widget(index).horizontalScrollBar().maximum() == 0, airm.tabs.tabText(index)


def test_long_layer_and_model_names_never_widen_the_dock(make_napari_viewer, qtbot, tmp_path,
                                                        monkeypatch):
    """A retrained model's name and a file-named layer are long; the dock keeps its width."""
    from napari_airm.widgets._models import registry

    monkeypatch.setattr(registry, "_registered", {})  # this session's retrained models only
    viewer = make_napari_viewer(show=True)
    _dock, airm = viewer.window.add_plugin_dock_widget("napari-airm", "AIRM")
    window = viewer.window._qt_window
    window.resize(SCREEN[0], USABLE_HEIGHT)
    settle(qtbot)
    long_name = "ILSVRC2012_test_00038403_from_the_microscope_session_of_tuesday"
    viewer.add_image(np.zeros((32, 32), np.uint8), name=f"{long_name} image")
    viewer.add_labels(np.zeros((32, 32), np.uint8), name=f"{long_name} coarse mask")
    model = tmp_path / "finetune-run-20261207-104226-on-the-corrected-nuclei-of-tuesday" / "model"
    model.mkdir(parents=True)
    for name in ("config.yaml", "weights.safetensors"):
        (model / name).write_text("")
    registry.register(model)
    settle(qtbot)
    assert airm.refine.model.native.count() >= 3  # the long model is offered
    for index in range(airm.tabs.count()):
        airm.tabs.setCurrentIndex(index)
        settle(qtbot)
        assert airm.tabs.widget(index).horizontalScrollBar().maximum() == 0, airm.tabs.tabText(index)


def test_three_widgets_tabbed_by_napari_fit_too(make_napari_viewer, qtbot):
    """`napari -w napari-airm __all__` docks every widget, the later ones as tabs."""
    viewer = make_napari_viewer(show=True)
    for index, name in enumerate(("AIRM", "Refine", "Evaluate", "Retrain")):
        viewer.window.add_plugin_dock_widget("napari-airm", name, tabify=index > 0)
    settle(qtbot)
    minimum = viewer.window._qt_window.minimumSizeHint()
    assert minimum.width() <= SCREEN[0] and minimum.height() <= USABLE_HEIGHT, minimum


def test_evaluate_table_shows_all_four_rows(make_napari_viewer, qtbot):
    from napari_airm.widgets.evaluate import evaluate_arrays

    import numpy as np

    viewer = make_napari_viewer(show=True)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-airm", "Evaluate")
    gt = np.zeros((64, 80), np.uint8)
    gt[8:30, 8:40], gt[36:60, 44:76] = 1, 2
    pred = gt.copy()
    pred[8:12, 8:40] = 0
    widget.show_report(evaluate_arrays(pred, gt, gt))
    settle(qtbot)
    table = widget.table
    assert table.rowCount() == 4  # id 1, id 2, all ids, foreground
    assert table.verticalScrollBar().maximum() == 0
    bottom = table.visualRect(table.model().index(3, 0)).bottom()
    assert bottom <= table.viewport().height()
