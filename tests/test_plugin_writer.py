"""File ▸ Save of a Labels layer through napari-airm's writer: zarr and TIFF read back equal."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")


@pytest.fixture
def labels():
    rng = np.random.default_rng(0)
    data = np.zeros((300, 420), np.uint16)
    data[20:140, 30:200] = 1
    data[150:290, 220:400] = 700  # an id above 255 keeps its value
    data[rng.random(data.shape) < 0.01] = 3
    return data


@pytest.mark.parametrize("suffix", [".zarr", ".tif"])
def test_labels_layer_saved_and_read_back_equal(make_napari_viewer, tmp_path, labels, suffix):
    from napari_airm.io_utils import read_mask

    viewer = make_napari_viewer()
    layer = viewer.add_labels(labels, name="refined")
    path = tmp_path / f"refined{suffix}"
    written = layer.save(str(path), plugin="napari-airm")
    assert written == [str(path)]
    back = np.asarray(read_mask(path)[0])
    np.testing.assert_array_equal(back, labels)
    assert back.dtype == labels.dtype
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary leftovers


def test_multiscale_labels_save_full_resolution(tmp_path, labels):
    import dask.array as da

    from napari_airm._writer import write_labels

    levels = [da.from_array(labels, chunks=128), da.from_array(labels[::2, ::2], chunks=128)]
    write_labels(str(tmp_path / "pyr.zarr"), levels, {"multiscale": True})
    import zarr

    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "pyr.zarr"), mode="r")[:], labels)


def test_an_existing_zarr_store_is_never_replaced(tmp_path, labels):
    from napari_airm._writer import write_labels

    path = tmp_path / "mine.zarr"
    write_labels(str(path), labels, {})
    with pytest.raises(FileExistsError, match="choose a new name"):
        write_labels(str(path), np.zeros_like(labels), {})
    import zarr

    np.testing.assert_array_equal(zarr.open_array(str(path), mode="r")[:], labels)


def test_an_existing_tiff_is_replaced_whole(tmp_path, labels):
    """napari's Save dialog asks before it hands over an existing file name."""
    from napari_airm._writer import write_labels
    from napari_airm.io_utils import read_mask

    path = tmp_path / "mine.tif"
    write_labels(str(path), np.ones_like(labels), {})
    write_labels(str(path), labels, {})
    np.testing.assert_array_equal(np.asarray(read_mask(path)[0]), labels)


def test_other_formats_are_refused(tmp_path, labels):
    from napari_airm._writer import write_labels

    with pytest.raises(ValueError, match=".zarr, .tif, .tiff"):
        write_labels(str(tmp_path / "x.png"), labels, {})
