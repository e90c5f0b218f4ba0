"""Retrain widget: export pairs in the trainer's layout, a few steps off the GUI thread, the
new model scored against the base one and offered to Refine, used only when the user says so."""
from __future__ import annotations


import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_airm._sample_data import make_sample_labels  # noqa: E402
from napari_airm.widgets import _layers  # noqa: E402
from napari_airm.widgets._export import export_pairs  # noqa: E402
from napari_airm.widgets._models import OTHER, registry  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from napari_airm.model import build_model, save_model

    return save_model(build_model("airm-b0"), tmp_path_factory.mktemp("models") / "tiny")


def test_export_pairs_layout(tmp_path):
    from napari_airm.data.dataset import find_pairs, read_pair

    image, _, gt = make_sample_labels(512, 640)
    names = export_pairs([("sample", image, gt)], tmp_path / "data", max_side=256, margin=16)
    pairs = find_pairs(tmp_path / "data")  # the trainer reads it
    assert sorted(p.name for p in pairs) == sorted(names)
    assert any(n.startswith("sample_id1") for n in names) and any(n.startswith("sample_id2") for n in names)
    for pair in pairs:
        img, mask = read_pair(pair)
        assert img.dtype == np.uint8 and img.shape[2] == 3 and max(mask.shape) <= 256
        assert 0 < mask.mean() < 1  # every crop holds a boundary


def test_retrain_registers_model_for_refine(make_napari_viewer, qtbot, tiny_model, tmp_path):
    image, _, gt = make_sample_labels(256, 320)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="img", rgb=True)
    viewer.add_labels(gt, name="corrected")
    _d, refine = viewer.window.add_plugin_dock_widget("napari-airm", "Refine")
    _d, retrain = viewer.window.add_plugin_dock_widget("napari-airm", "Retrain")
    retrain.image.value = _layers.unwrap(viewer.layers["img"])
    retrain.labels.value = _layers.unwrap(viewer.layers["corrected"])
    assert retrain.add_pair()
    assert retrain.pair_list.count() == 1
    retrain.base_model.value = OTHER
    retrain.model_folder.value = tiny_model
    retrain.workdir.value = tmp_path / "work"
    retrain.steps.value, retrain.crop.value, retrain.batch.value = 2, 64, 2
    retrain.device.value = "cpu"
    model_before = refine.model.value
    before = len(registry.registered())
    assert retrain.run() is not None, retrain.status.value
    qtbot.waitUntil(lambda: not retrain.running, timeout=300_000)
    assert retrain.new_model, retrain.status.value
    folder = registry.registered()[retrain.new_model]
    assert len(registry.registered()) == before + 1
    assert (folder / "weights.safetensors").is_file() and folder.is_relative_to(tmp_path)
    run_dir = folder.parent.parent
    assert (run_dir / "data" / "images").is_dir() and (run_dir / "data" / "masks").is_dir()
    # the Refine widget offers it, but keeps its model until the user adopts the new one
    assert folder in [v for v in refine.model.choices if v != OTHER]
    assert refine.model.value == model_before
    assert "base → new: IoU" in retrain.status.value and "mBA" in retrain.status.value
    check = retrain.check
    assert check["crops"] >= 1 and 0 <= check["new"]["iou"] <= 1 and 0 <= check["base"]["mba"] <= 1
    assert retrain.use_button.enabled
    retrain.use_button.native.click()
    assert refine.model.value == folder
    assert not retrain.use_button.enabled


def test_retrain_cancel_registers_nothing(make_napari_viewer, qtbot, tiny_model, tmp_path):
    image, _, gt = make_sample_labels(256, 320)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="img", rgb=True)
    viewer.add_labels(gt, name="corrected")
    _d, retrain = viewer.window.add_plugin_dock_widget("napari-airm", "Retrain")
    retrain.base_model.value = OTHER
    retrain.model_folder.value = tiny_model
    retrain.workdir.value = tmp_path / "work"
    retrain.steps.value, retrain.crop.value, retrain.batch.value = 500, 64, 2
    retrain.device.value = "cpu"
    before = dict(registry.registered())
    seen = []

    def stop_on_first_step(value):
        if value >= 1 and not seen:
            seen.append(value)
            retrain.cancel_button.native.click()

    retrain.progress.changed.connect(stop_on_first_step)
    assert retrain.run() is not None, retrain.status.value  # no pair added: uses the chosen layers
    qtbot.waitUntil(lambda: not retrain.running, timeout=300_000)
    assert seen and "stopped" in retrain.status.value
    assert registry.registered() == before
    assert retrain.new_model is None


def test_closed_widgets_do_not_break_later_events(make_napari_viewer, qtbot, tiny_model):
    """A closed (deleted) Refine widget no longer listens to layer or model-registry events."""
    from qtpy.QtWidgets import QApplication

    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-airm", "Refine")
    destroyed = []
    widget.destroyed.connect(lambda *_: destroyed.append(True))
    viewer.window.remove_dock_widget(dock)
    widget.deleteLater()
    qtbot.waitUntil(lambda: bool(destroyed), timeout=5000)
    QApplication.processEvents()
    viewer.add_labels(np.zeros((8, 8), np.uint8))  # layer events: no call into the dead widget
    name = registry.register(tiny_model, name="after-close")
    assert registry.registered()[name] == tiny_model.resolve()
