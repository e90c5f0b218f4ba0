"""The procedural sample and the zarr reader (lazy, multiscale)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from napari_airm import metrics
from napari_airm._reader import read_zarr, write_zarr_sample, zarr_get_reader
from napari_airm._sample_data import airm_sample, make_sample, make_sample_labels


def test_make_sample_contract():
    t0 = time.perf_counter()
    image, coarse, gt = make_sample()
    elapsed = time.perf_counter() - t0
    assert image.shape == (3072, 4096, 3) and image.dtype == np.uint8
    assert coarse.shape == gt.shape == (3072, 4096) and coarse.dtype == gt.dtype == bool
    assert elapsed < 10  # about 1 s on one core; generous for a busy CI machine
    again = make_sample()
    assert all(np.array_equal(a, b) for a, b in zip((image, coarse, gt), again))
    assert not np.array_equal(make_sample(256, 256, seed=1)[0], make_sample(256, 256, seed=0)[0])
    # a rough but recognisable annotation: good IoU, poor boundaries, thin parts lost
    assert 0.85 < metrics.iou(coarse, gt) < 0.98
    assert metrics.boundary_accuracy(coarse, gt) < 0.85
    assert np.count_nonzero(gt & ~coarse) > 1000
    # the objects are visible in the image: foreground and background differ in colour
    assert np.abs(image[gt].mean(0) - image[~gt].mean(0)).max() > 30


def test_sample_labels_and_napari_entry():
    image, coarse, gt = make_sample_labels(256, 384)
    assert set(np.unique(gt)) == {0, 1, 2} and set(np.unique(coarse)) == {0, 1, 2}
    layers = airm_sample()
    assert [t[2] for t in layers] == ["image", "labels", "labels"]
    assert layers[0][1] == {"name": "AIRM sample image", "rgb": True}
    # the hidden truth below the coarse mask: the mask to refine is the top (selected) layer
    assert [t[1]["name"] for t in layers] == ["AIRM sample image", "ground truth", "coarse mask"]
    assert layers[1][1]["visible"] is False and layers[2][0].dtype == np.uint8


def test_small_sizes_work():
    for h, w in ((64, 64), (100, 700), (700, 100)):
        image, coarse, gt = make_sample(h, w)
        assert image.shape == (h, w, 3) and gt.any()
    with pytest.raises(ValueError):
        make_sample(32, 32)


def test_zarr_store_round_trip_with_pyramid(tmp_path):
    import dask.array as da

    image, coarse, _ = make_sample_labels(600, 900)
    path = write_zarr_sample(tmp_path / "a.zarr", image, coarse, levels=3, chunks=128)
    assert zarr_get_reader(str(path)) is read_zarr
    (img_data, img_meta, kind), (mask_data, mask_meta, mkind) = read_zarr(str(path))
    assert kind == "image" and mkind == "labels" and img_meta["multiscale"] and img_meta["rgb"]
    assert [lvl.shape for lvl in img_data] == [(600, 900, 3), (300, 450, 3), (150, 225, 3)]
    assert all(isinstance(lvl, da.Array) for lvl in img_data)
    np.testing.assert_array_equal(np.asarray(img_data[0]), image)
    np.testing.assert_array_equal(np.asarray(img_data[1]), image[::2, ::2])
    np.testing.assert_array_equal(mask_data, coarse)  # small masks open as plain, paintable labels


def test_large_single_level_store_opens_as_lazy_pyramid(tmp_path, monkeypatch):
    import dask.array as da

    import napari_airm._reader as reader

    monkeypatch.setattr(reader, "MULTISCALE_ABOVE", 512)
    monkeypatch.setattr(reader, "SMALLEST_LEVEL", 128)
    monkeypatch.setattr(reader, "LABELS_IN_MEMORY", 1000)
    image = np.random.default_rng(0).integers(0, 255, (700, 1000), dtype=np.uint8)
    mask = np.zeros((700, 1000), bool)
    mask[100:300, 200:500] = True
    path = write_zarr_sample(tmp_path / "big.zarr", image, mask, chunks=256)
    (levels, meta, _), (mlevels, mmeta, _) = read_zarr(str(path))
    assert meta["multiscale"] and not meta["rgb"] and len(levels) == 4  # 1000, 500, 250, 125
    assert all(isinstance(lvl, da.Array) for lvl in levels + mlevels)  # nothing loaded whole
    assert mmeta["multiscale"] and mlevels[0].dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(levels[2]), image[::4, ::4])


def test_reader_declines_other_paths(tmp_path):
    import zarr

    assert zarr_get_reader(str(tmp_path / "x.tif")) is None
    assert zarr_get_reader(str(tmp_path / "missing.zarr")) is None
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").create_array("foo", shape=(4,), dtype="u1")
    assert zarr_get_reader(str(tmp_path / "other.zarr")) is None  # not our layout: other readers


def test_viewer_opens_store(make_napari_viewer, tmp_path):
    pytest.importorskip("pytestqt")
    image, coarse, _ = make_sample_labels(300, 400)
    path = write_zarr_sample(tmp_path / "scene.zarr", image, coarse, levels=2, chunks=128)
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin="napari-airm")
    assert [layer.name for layer in viewer.layers] == ["scene", "scene mask"]
    assert viewer.layers["scene"].multiscale and viewer.layers["scene"].rgb
