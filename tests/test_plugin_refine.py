"""Refine widget under a virtual display: results, one undoable edit, cancel, lazy images."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_airm._sample_data import make_sample_labels  # noqa: E402
from napari_airm.widgets import _layers  # noqa: E402
from napari_airm.widgets._models import OTHER  # noqa: E402
from napari_airm.widgets.refine import IN_PLACE, NEW, SELECTED, RefineResult  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained airm-b0 model folder (refines to about its input: enough for mechanics)."""
    from napari_airm.model import build_model, save_model

    return save_model(build_model("airm-b0"), tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def bundled_model():
    """The bundled default model (NAPARI_AIRM_TEST_MODEL may name another trained folder)."""
    from napari_airm.model import default_model_path, is_model_dir

    try:
        path = Path(os.environ.get("NAPARI_AIRM_TEST_MODEL") or default_model_path())
    except FileNotFoundError:
        path = None
    if path is None or not is_model_dir(path):
        pytest.skip("the bundled model (models/airm-default) has no weights yet")
    return path


def open_refine(viewer, small=(512, 768)):
    image, coarse, gt = make_sample_labels(*small)
    viewer.add_image(image, name="img", rgb=True)
    viewer.add_labels(coarse.copy(), name="coarse")  # the layer does not copy: keep ours apart
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-airm", "Refine")
    widget.image.value = _layers.unwrap(viewer.layers["img"])
    widget.coarse.value = _layers.unwrap(viewer.layers["coarse"])
    widget.device.value = "cpu"
    widget.tile.value = 256
    return widget, coarse, gt


def use_model(widget, folder):
    """Pick ``folder`` from the model list when it is offered there, else as 'other folder…'."""
    offered = [v for v in widget.model.choices if v != OTHER]
    if Path(folder) in offered:
        widget.model.value = Path(folder)
        assert widget.model_folder.native.isHidden()
        return
    widget.model.value = OTHER
    assert not widget.model_folder.native.isHidden()
    widget.model_folder.value = folder


def run_and_wait(qtbot, widget, timeout=240_000):
    job = widget.run()
    assert job is not None, widget.status.value
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)
    return job


def test_refine_changes_labels_near_boundaries(make_napari_viewer, qtbot, bundled_model):
    import cv2

    viewer = make_napari_viewer()
    widget, coarse, gt = open_refine(viewer, small=(1024, 1536))
    use_model(widget, bundled_model)
    ticks = []
    from qtpy.QtCore import QTimer

    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(20)
    run_and_wait(qtbot, widget)
    timer.stop()
    assert ticks, "the event loop must keep running while the worker refines"
    out = viewer.layers["coarse refined"].data
    assert out.shape == coarse.shape and set(np.unique(out)) <= {0, 1, 2}
    changed = out != coarse
    assert changed.any(), widget.status.value
    # every change lies near the coarse boundary (refinement, not repainting)
    edge = cv2.morphologyEx((coarse > 0).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    dist = cv2.distanceTransform((edge == 0).astype(np.uint8), cv2.DIST_L2, 5)
    assert dist[changed].max() <= 64
    np.testing.assert_array_equal(viewer.layers["coarse"].data, coarse)  # source untouched


def test_refine_in_place_is_one_undoable_edit(make_napari_viewer, qtbot, bundled_model):
    viewer = make_napari_viewer()
    widget, coarse, _ = open_refine(viewer, small=(1024, 1536))
    use_model(widget, bundled_model)
    widget.output.value = IN_PLACE
    layer = viewer.layers["coarse"]
    run_and_wait(qtbot, widget)
    assert len(viewer.layers) == 2  # no new layer
    assert not np.array_equal(layer.data, coarse), widget.status.value
    layer.undo()
    np.testing.assert_array_equal(layer.data, coarse)
    layer.redo()
    assert not np.array_equal(layer.data, coarse)


def test_in_place_apply_is_a_single_history_item(make_napari_viewer):
    """The write path alone (no model): changed pixels in one data_setitem, undone at once."""
    viewer = make_napari_viewer()
    widget, coarse, _ = open_refine(viewer, small=(128, 160))
    layer = _layers.unwrap(viewer.layers["coarse"])
    new = coarse.copy()
    new[10:40, 10:60] = 1
    new[100:120, 100:150] = 0
    idx = np.nonzero(new != coarse)
    req = type("Req", (), {"mode": IN_PLACE, "target": layer, "source_name": "coarse"})()
    widget.apply(req, RefineResult(indices=idx, values=new[idx]))
    np.testing.assert_array_equal(layer.data, new)
    assert len(layer._undo_history) == 1
    layer.undo()
    np.testing.assert_array_equal(layer.data, coarse)


def test_cancel_leaves_layer_unchanged(make_napari_viewer, qtbot, tiny_model):
    viewer = make_napari_viewer()
    widget, coarse, _ = open_refine(viewer)
    use_model(widget, tiny_model)
    widget.output.value = IN_PLACE
    layer = viewer.layers["coarse"]
    before = np.array(layer.data, copy=True)
    seen = []

    def click_cancel_on_first_progress(value):
        if not seen:
            seen.append(value)
            widget.cancel_button.native.click()  # the real button, on the GUI thread

    widget.progress.changed.connect(click_cancel_on_first_progress)
    run_and_wait(qtbot, widget)
    assert seen, "the run reported no progress"
    assert "cancelled" in widget.status.value
    np.testing.assert_array_equal(layer.data, before)
    assert len(viewer.layers) == 2
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_refine_new_layer_with_selected_id(make_napari_viewer, qtbot, tiny_model):
    viewer = make_napari_viewer()
    widget, coarse, _ = open_refine(viewer)
    use_model(widget, tiny_model)
    viewer.layers["coarse"].selected_label = 2
    widget.which.value = SELECTED
    widget.output.value = NEW
    run_and_wait(qtbot, widget)
    out = viewer.layers["coarse refined"].data
    assert out.dtype == coarse.dtype and out.shape == coarse.shape
    np.testing.assert_array_equal(out == 1, coarse == 1)  # the other object is untouched
    assert (out == 2).any()


def test_refine_from_shapes(make_napari_viewer, qtbot, tiny_model):
    viewer = make_napari_viewer()
    widget, coarse, _ = open_refine(viewer)
    use_model(widget, tiny_model)
    shapes = viewer.add_shapes([np.array([[150, 200], [150, 420], [380, 420], [380, 200]])],
                               shape_type="polygon", name="outline")
    shapes.add_ellipses(np.array([[60, 520], [60, 700], [200, 700], [200, 520]]))
    widget.reset_choices()
    widget.coarse.value = _layers.unwrap(shapes)
    run_and_wait(qtbot, widget)
    out = viewer.layers["outline refined"].data
    assert out.shape == coarse.shape and set(np.unique(out)) == {0, 1, 2}
    assert (out[150:380, 200:420] == 1).mean() > 0.8 and (out[100:160, 580:640] == 2).mean() > 0.8


def test_refine_multiscale_zarr_reads_level0(make_napari_viewer, qtbot, tiny_model, tmp_path):
    from napari_airm._reader import write_zarr_sample

    image, coarse, _ = make_sample_labels(640, 800)
    store = write_zarr_sample(tmp_path / "s.zarr", image, coarse, levels=3, chunks=256)
    viewer = make_napari_viewer()
    viewer.open(str(store), plugin="napari-airm")
    img = viewer.layers["s"]
    assert img.multiscale and not isinstance(img.data[0], np.ndarray)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-airm", "Refine")
    widget.image.value = _layers.unwrap(img)
    widget.coarse.value = _layers.unwrap(viewer.layers["s mask"])
    widget.device.value = "cpu"
    use_model(widget, tiny_model)
    req = widget.make_request()
    assert req.image.shape == (640, 800, 3) and not isinstance(req.image, np.ndarray)
    run_and_wait(qtbot, widget)
    out = viewer.layers["s mask refined"].data
    assert out.shape == (640, 800)
    assert (out == coarse).mean() > 0.99  # an untrained model keeps (about) its input


def test_closing_the_viewer_stops_a_run(make_napari_viewer, qtbot, tiny_model):
    """napari asks workers to quit when it closes; a running refinement stops at the next tile."""
    viewer = make_napari_viewer()
    widget, coarse, _ = open_refine(viewer, small=(1024, 1536))
    use_model(widget, tiny_model)
    job = widget.run()
    qtbot.waitUntil(lambda: widget.progress.value > 0 or not widget.running, timeout=120_000)
    job.worker.quit()  # what napari does to every worker on close
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert job.outcome is not None and job.outcome.cancelled
    assert "coarse refined" not in [layer.name for layer in viewer.layers]


def test_advanced_choices_reach_the_engine_as_its_settings(make_napari_viewer, qtbot, bundled_model):
    """Reach, the boundary solve, passes and flip averaging give exactly what
    napari_airm.refine(..., reach=6, solve=False, passes=2, flips=2) gives; the defaults are
    the API's."""
    from napari_airm import api
    from napari_airm.engine.settings import PRESETS, RefineSettings

    viewer = make_napari_viewer()
    widget, coarse, _ = open_refine(viewer, small=(256, 320))
    use_model(widget, bundled_model)
    assert widget.settings() == RefineSettings(tile=256), "the widget's defaults are the API's"
    widget.rough.value = True
    assert widget.settings().keep == PRESETS["rough"].keep
    widget.rough.value = False
    widget.reach.value = 6
    widget.solve.value = False
    widget.passes.value = 2
    widget.flips.value = 2
    request = widget.make_request()
    assert request.settings == RefineSettings(reach=6, solve=False, tile=256, passes=2, flips=2)
    run_and_wait(qtbot, widget)
    expected = api.refine(viewer.layers["img"].data, coarse, model=bundled_model, device="cpu",
                          tile=256, reach=6, solve=False, passes=2, flips=2)
    np.testing.assert_array_equal(viewer.layers["coarse refined"].data > 0, expected > 0)


def test_refined_layer_is_named_and_coloured_apart_from_the_coarse_one(make_napari_viewer):
    """Shown together, the result and the mask it came from can be told apart."""
    from napari_airm.widgets._colors import colour_distance
    from napari_airm.widgets._refine_job import RefineRequest

    viewer = make_napari_viewer()
    widget, coarse, _ = open_refine(viewer, small=(128, 160))
    source = viewer.layers["coarse"]
    req = RefineRequest(image=None, mode=NEW, source_name="coarse", source_colormap=source.colormap)
    widget.apply(req, RefineResult(labels=coarse.copy()))
    refined = viewer.layers["coarse refined"]
    ids = np.array([1, 2])
    assert colour_distance(refined.colormap.map(ids), source.colormap.map(ids)).min() > 0.3
    widget.apply(req, RefineResult(labels=coarse.copy()))  # a second run: a second, named layer
    assert viewer.layers[-1].name == "coarse refined [2]"


def test_progress_names_its_unit():
    """Tiles for a mask, objects for a label image — decided by the engine's own scan of the
    mask, not guessed from the count (a huge mask can have 2,000 tiles)."""
    from napari_airm.widgets._refine_job import OBJECTS, describe_progress, progress_unit

    assert describe_progress(0, 0) == "loading the model…"
    assert describe_progress(5, 120) == "tile 5 of 120"
    assert describe_progress(1500, 2000) == "tile 1500 of 2000"
    assert describe_progress(1500, 2000, OBJECTS) == "object 2 of 2 (75%)"
    binary = np.zeros((64, 64), np.uint8)
    binary[10:30, 10:30] = 1
    assert describe_progress(3, 9, progress_unit(binary, 64)) == "tile 3 of 9"
    labels = binary.copy()
    labels[40:60, 40:60] = 7
    assert describe_progress(1500, 2000, progress_unit(labels, 64)) == "object 2 of 2 (75%)"


def test_time_is_counted_from_the_click_with_model_loading(make_napari_viewer, qtbot, tiny_model):
    """The status reports what the user waited; the bar is busy (moving) while the model loads,
    napari's Activity dock shows the run."""
    import re
    import time

    from napari_airm import api

    api._MODEL_CACHE.clear()  # the model is loaded inside the run, as on a first click
    viewer = make_napari_viewer()
    widget, _coarse, _ = open_refine(viewer)
    use_model(widget, tiny_model)
    seen = []
    original = widget._on_progress

    def record(done, total, info=None):
        original(done, total, info)
        seen.append((done, total, widget.progress.max, widget.status.value,
                     widget._activity is not None))

    widget._on_progress = record
    t0 = time.perf_counter()
    run_and_wait(qtbot, widget)
    waited = time.perf_counter() - t0
    first = seen[0]
    assert first[1] == 0 and first[2] == 0, "a busy bar (max 0) while the model loads"
    assert first[3].startswith("loading the model") and first[4], "shown in napari's Activity too"
    assert any(text.startswith("tile ") or text.startswith("object ") for *_, text, _a in seen[1:])
    match = re.search(r"in ([\d.]+) s \(click to result; loading the model ([\d.]+) s\)",
                      widget.status.value)
    assert match, widget.status.value
    wall, loading = float(match.group(1)), float(match.group(2))
    assert widget.last_result.seconds <= wall + 0.05 <= waited + 0.1
    assert 0 < loading <= wall
    assert widget._activity is None and widget.progress.value == widget.progress.max > 0
