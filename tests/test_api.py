"""The public surface: the two-line refine, evaluate and refine_many on dask.distributed."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import napari_airm as airm
from napari_airm import cli
from napari_airm.metrics import boundary_accuracy, iou
from napari_airm.model import build_model, save_model


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    save_model(build_model("airm-b0"), folder)
    return folder


def blob(h=96, w=128, shift=0):
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - h / 2) ** 2 / (h / 3) ** 2 + (xx - w / 2 - shift) ** 2 / (w / 3) ** 2 < 1


def test_two_line_refine_with_the_bundled_model():
    gt = blob(160, 200)
    image = np.where(gt[..., None], 220, 40).astype(np.uint8).repeat(3, axis=2)
    coarse = blob(160, 200, shift=6)
    mask = airm.refine(image, coarse)
    assert mask.shape == coarse.shape and mask.dtype == bool
    assert 0.5 < mask.mean() / coarse.mean() < 2  # a refinement, not a different object


def test_load_model_is_cached_and_rejects_non_models(tmp_path, tiny_model_dir):
    assert airm.load_model(tiny_model_dir) is airm.load_model(tiny_model_dir)
    with pytest.raises(ValueError, match="not a napari-airm model folder"):
        airm.load_model(tmp_path)


def test_evaluate_reports_the_field_metrics_and_the_gain():
    gt, coarse, pred = blob(), blob(shift=5), blob(shift=1)
    report = airm.evaluate([pred], [gt], coarse=[coarse])
    assert report["refined"]["iou"] == pytest.approx(iou(pred, gt))
    assert report["refined"]["mba"] == pytest.approx(boundary_accuracy(pred, gt))
    assert report["coarse"]["iou"] == pytest.approx(iou(coarse, gt))
    assert report["gain"]["iou"] == pytest.approx(iou(pred, gt) - iou(coarse, gt))
    with pytest.raises(ValueError, match="2 ground truths"):
        airm.evaluate([pred], [gt, gt])


def test_refine_many_runs_on_a_local_dask_cluster(tmp_path, tiny_model_dir):
    pairs = []
    for k in range(2):
        gt = blob(64, 80, shift=k)
        img = tmp_path / f"img{k}.png"
        msk = tmp_path / f"msk{k}.png"
        Image.fromarray(np.where(gt[..., None], 200, 30).astype(np.uint8).repeat(3, axis=2)).save(img)
        Image.fromarray(gt.astype(np.uint8) * 255).save(msk)
        pairs.append((img, msk))
    outputs = airm.refine_many(pairs, tmp_path / "out", model=tiny_model_dir)
    assert [p.name for p in outputs] == ["img0.png", "img1.png"]
    for (_, msk), out in zip(pairs, outputs):
        result = np.asarray(Image.open(out)) > 0
        expected = np.asarray(Image.open(msk)) > 0
        assert result.shape == expected.shape
        assert (result == expected).mean() > 0.99  # an untrained residual model keeps the mask
    assert not list((tmp_path / "out").glob(".*partial*"))
    # each task writes what `napari-airm refine` writes for its pair (one shared function)
    single = tmp_path / "single.png"
    assert cli.main(["refine", str(pairs[1][0]), str(pairs[1][1]), "-o", str(single),
                     "--model", str(tiny_model_dir), "-q"]) == 0
    assert np.array_equal(np.asarray(Image.open(single)), np.asarray(Image.open(outputs[1])))
    with pytest.raises(FileExistsError, match="already exists"):
        airm.refine_many(pairs, tmp_path / "out", model=tiny_model_dir)
