"""Refine widget with a scheduler: zarr-backed layers refined by dask workers into a new store
that opens as a lazy multiscale layer, equal to the single-process result (issue 16, item 4)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
pytest.importorskip("distributed")

from napari_airm import refine  # noqa: E402
from napari_airm._reader import write_zarr_sample  # noqa: E402
from napari_airm.engine.distributed import COMPLETE_ATTR  # noqa: E402
from napari_airm.model import build_model, save_model  # noqa: E402
from napari_airm.widgets import _layers  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_engine import scene  # noqa: E402
from test_plugin_refine import run_and_wait, use_model  # noqa: E402

SIDE, TILE = 1056, 512  # one tile stage at the default global side: 3×3 groups of 512²


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """An untrained model made to move the boundary (as in test_distributed), saved in full
    precision so this process and the workers load the same weights."""
    torch.manual_seed(0)
    model = build_model("airm-lite0", encoder_init=None).eval()
    with torch.no_grad():
        model.shared.weights[-1].mul_(2000)
    return save_model(model, tmp_path_factory.mktemp("model") / "busy", half=False)


@pytest.fixture(scope="module")
def scene_store(tmp_path_factory):
    """scene.zarr with image/ and mask/ (the reader's layout), and the arrays in memory."""
    image, _, coarse = scene(SIDE, SIDE, seed=4)
    path = write_zarr_sample(tmp_path_factory.mktemp("scene") / "scene.zarr", image, coarse,
                             chunks=256)
    return path, image, coarse


def open_store(viewer, path, model_folder):
    """The store opened by the napari-airm reader, chosen in the Refine widget."""
    viewer.open(str(path), plugin="napari-airm")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-airm", "Refine")
    widget.image.value = _layers.unwrap(viewer.layers["scene"])
    widget.coarse.value = _layers.unwrap(viewer.layers["scene mask"])
    widget.device.value = "cpu"
    widget.tile.value = TILE
    use_model(widget, model_folder)
    return widget


def test_a_local_cluster_refines_zarr_layers_into_a_multiscale_layer(
        make_napari_viewer, qtbot, scene_store, model_folder, tmp_path):
    import dask.array as da

    path, image, coarse = scene_store
    viewer = make_napari_viewer()
    widget = open_store(viewer, path, model_folder)
    widget.scheduler.value = "local"
    widget.store.value = tmp_path / "refined.zarr"
    statuses = []
    widget.progress.changed.connect(lambda _v: statuses.append(widget.status.value))
    run_and_wait(qtbot, widget)

    layer = viewer.layers["scene mask refined"]
    assert layer.multiscale and len(layer.data) >= 2, widget.status.value
    assert isinstance(layer.data[0], da.Array)  # read lazily from the store
    expected = refine(image, coarse, widget.settings(), model=model_folder, device="cpu")
    assert (expected != coarse).sum() > 1000  # the model moves the boundary: a real comparison
    np.testing.assert_array_equal(np.asarray(layer.data[0]) > 0, expected)
    np.testing.assert_array_equal(np.asarray(layer.data[1]), np.asarray(layer.data[0])[::2, ::2])
    assert zarr.open_array(str(tmp_path / "refined.zarr"), mode="r").attrs[COMPLETE_ATTR] is True
    assert any("tile" in s and "on local" in s for s in statuses), statuses  # progress in tiles
    assert widget.progress.value == widget.progress.max > 0
    coarse_colour = viewer.layers["scene mask"].colormap.map(np.array([1]))[0, :3]
    assert np.abs(layer.colormap.map(np.array([1]))[0, :3] - coarse_colour).max() > 0.2


def test_a_layer_without_a_zarr_store_gets_a_clear_message(make_napari_viewer, tmp_path,
                                                           scene_store):
    _path, image, coarse = scene_store
    viewer = make_napari_viewer()
    viewer.add_image(image, name="scene", rgb=True)
    viewer.add_labels(coarse.astype(np.uint8), name="scene mask")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-airm", "Refine")
    widget.image.value = _layers.unwrap(viewer.layers["scene"])
    widget.coarse.value = _layers.unwrap(viewer.layers["scene mask"])
    widget.scheduler.value = "tcp://127.0.0.1:8786"
    widget.store.value = tmp_path / "refined.zarr"
    assert widget.run() is None
    assert "'scene' is not backed by a zarr store" in widget.status.value
    assert "save it as .zarr" in widget.status.value
    assert not (tmp_path / "refined.zarr").exists()


def test_a_mask_edited_since_it_was_opened_is_not_sent_to_workers(
        make_napari_viewer, scene_store, model_folder, tmp_path):
    path, _, _ = scene_store
    viewer = make_napari_viewer()
    widget = open_store(viewer, path, model_folder)
    mask = viewer.layers["scene mask"]
    mask.paint((10, 10), 1)  # an edit the store does not have
    widget.scheduler.value = "local"
    widget.store.value = tmp_path / "refined.zarr"
    assert widget.run() is None
    assert "was edited after it was opened" in widget.status.value


def test_an_existing_output_store_is_refused(make_napari_viewer, scene_store, model_folder,
                                             tmp_path):
    path, _, _ = scene_store
    viewer = make_napari_viewer()
    widget = open_store(viewer, path, model_folder)
    existing = zarr.open_array(str(tmp_path / "mine.zarr"), mode="w", shape=(4, 4), dtype="u1")
    existing[...] = 7
    widget.scheduler.value = "local"
    widget.store.value = tmp_path / "mine.zarr"
    assert widget.run() is None
    assert "already exists" in widget.status.value
    assert (zarr.open_array(str(tmp_path / "mine.zarr"), mode="r")[...] == 7).all()
    assert len(viewer.layers) == 2


def test_cancel_leaves_the_store_marked_incomplete(make_napari_viewer, qtbot, scene_store,
                                                   model_folder, tmp_path):
    path, _, _ = scene_store
    viewer = make_napari_viewer()
    widget = open_store(viewer, path, model_folder)
    widget.scheduler.value = "local"
    widget.store.value = tmp_path / "refined.zarr"

    def cancel_once_tiles_are_counted(_value):
        if widget.progress.max > 0 and widget.cancel_button.enabled:
            widget.cancel_button.native.click()

    widget.progress.changed.connect(cancel_once_tiles_are_counted)
    run_and_wait(qtbot, widget)
    assert "marked incomplete" in widget.status.value, widget.status.value
    assert zarr.open_array(str(tmp_path / "refined.zarr"), mode="r").attrs[COMPLETE_ATTR] is False
    assert len(viewer.layers) == 2 and widget.run_button.enabled


def test_an_unreachable_scheduler_is_named_and_leaves_no_store(scene_store, model_folder,
                                                               tmp_path):
    import dask

    from napari_airm.widgets._cluster_job import ClusterRequest, run_on_cluster

    path, _, _ = scene_store
    req = ClusterRequest(image_path=path, mask_path=path, out_path=tmp_path / "refined.zarr",
                         scheduler="tcp://127.0.0.1:1", model=model_folder, device="cpu")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(ValueError, match="cannot reach the scheduler 'tcp://127.0.0.1:1'"):
            run_on_cluster(req)
    assert not (tmp_path / "refined.zarr").exists()
