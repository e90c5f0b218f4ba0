"""Bad choices give a clear message (status label + napari notification), never a traceback
dialog or a stuck widget."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_airm._sample_data import make_sample_labels  # noqa: E402
from napari_airm.widgets import _layers  # noqa: E402
from napari_airm.widgets._models import OTHER  # noqa: E402
from napari_airm.widgets.refine import IN_PLACE  # noqa: E402


@pytest.fixture
def errors(monkeypatch):
    """Collect what the widgets send to napari's show_error."""
    import napari.utils.notifications as notifications

    seen: list[str] = []
    monkeypatch.setattr(notifications, "show_error", lambda msg: seen.append(msg))
    return seen


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from napari_airm.model import build_model, save_model

    return save_model(build_model("airm-b0"), tmp_path_factory.mktemp("models") / "tiny")


def refine_widget(viewer, tiny_model):
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-airm", "Refine")
    widget.model.value = OTHER
    widget.model_folder.value = tiny_model
    widget.device.value = "cpu"
    return widget


def finish(qtbot, widget, job):
    if job is not None:
        qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_no_layers(make_napari_viewer, qtbot, errors, tiny_model):
    viewer = make_napari_viewer()
    widget = refine_widget(viewer, tiny_model)
    assert widget.run() is None
    assert "image layer" in widget.status.value and errors and "image layer" in errors[-1]


def test_wrong_layer_types(make_napari_viewer, qtbot, errors, tiny_model):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), rgb=True, name="img")
    viewer.add_points([[10, 10]], name="pts")
    widget = refine_widget(viewer, tiny_model)
    assert [name for name, _ in widget.coarse.choices] == []  # points are not offered
    assert widget.run() is None and "coarse mask" in widget.status.value
    # a 3-D stack is refused with a message
    viewer.add_image(np.zeros((3, 64, 64), np.uint8), name="stack")
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="lab")
    widget.image.value = _layers.unwrap(viewer.layers["stack"])
    widget.coarse.value = _layers.unwrap(viewer.layers["lab"])
    assert widget.run() is None and "2-D" in widget.status.value


def test_size_mismatch(make_napari_viewer, qtbot, errors, tiny_model):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 80, 3), np.uint8), rgb=True, name="img")
    viewer.add_labels(np.ones((64, 64), np.uint8), name="lab")
    widget = refine_widget(viewer, tiny_model)
    assert widget.run() is None
    assert "size mismatch" in widget.status.value and "64×64" in widget.status.value
    assert errors and "size mismatch" in errors[-1]


def test_empty_coarse_mask(make_napari_viewer, qtbot, errors, tiny_model):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), rgb=True, name="img")
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="lab")
    widget = refine_widget(viewer, tiny_model)
    finish(qtbot, widget, widget.run())  # checked in the worker (masks may be lazy and huge)
    assert "empty" in widget.status.value and errors and "empty" in errors[-1]
    assert len(viewer.layers) == 2


def test_selected_id_absent(make_napari_viewer, qtbot, errors, tiny_model):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), rgb=True, name="img")
    lab = viewer.add_labels(np.zeros((64, 64), np.uint8), name="lab")
    lab.data[10:30, 10:30] = 1
    lab.selected_label = 5
    widget = refine_widget(viewer, tiny_model)
    widget.which.value = "selected id"
    finish(qtbot, widget, widget.run())
    assert "label 5 does not occur" in widget.status.value


def test_model_folder_that_is_not_a_model(make_napari_viewer, qtbot, errors, tiny_model, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), rgb=True, name="img")
    viewer.add_labels(np.ones((64, 64), np.uint8), name="lab")
    widget = refine_widget(viewer, tiny_model)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.yaml").write_text("hello: world\n")
    widget.model_folder.value = tmp_path / "junk"
    assert widget.run() is None
    assert "not a napari-airm model folder" in widget.status.value
    # a folder with the right file names but broken content fails in the worker, also cleanly
    (tmp_path / "junk" / "weights.safetensors").write_bytes(b"not weights")
    finish(qtbot, widget, widget.run())
    assert widget.status.value.startswith("⚠") and "model" in widget.status.value


def test_in_place_on_shapes_refused(make_napari_viewer, qtbot, errors, tiny_model):
    viewer = make_napari_viewer()
    image, _, _ = make_sample_labels(128, 128)
    viewer.add_image(image, rgb=True, name="img")
    viewer.add_shapes([np.array([[10, 10], [10, 60], [60, 60]])], shape_type="polygon", name="s")
    widget = refine_widget(viewer, tiny_model)
    widget.output.value = IN_PLACE
    assert widget.run() is None and "new layer" in widget.status.value


def test_evaluate_size_mismatch_and_empty(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="a")
    viewer.add_labels(np.zeros((64, 70), np.uint8), name="b")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-airm", "Evaluate")
    widget.pred.value = _layers.unwrap(viewer.layers["a"])
    widget.gt.value = _layers.unwrap(viewer.layers["b"])
    assert widget.run() is None and "size mismatch" in widget.status.value
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="c")
    widget.gt.value = _layers.unwrap(viewer.layers["c"])
    job = widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert job is not None and "empty" in widget.status.value


def test_retrain_without_labels(make_napari_viewer, qtbot, errors, tiny_model, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64, 3), np.uint8), rgb=True, name="img")
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="lab")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-airm", "Retrain")
    widget.base_model.value = OTHER
    widget.model_folder.value = tiny_model
    widget.workdir.value = tmp_path
    widget.lr.value = "fast"
    assert widget.run() is None and "learning rate" in widget.status.value
    widget.lr.value = "1e-4"
    job = widget.run()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert job is not None and "empty" in widget.status.value and widget.new_model is None
