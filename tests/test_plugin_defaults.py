"""What the widgets pick before the user touches them: the layers an annotator would pick.

The sample's hidden "ground truth" must never be Refine's coarse mask (refining the truth looks
perfect and misleads), Evaluate never compares a layer with itself, Retrain does not train on
the truth by accident, whether the sample is opened before or after the dock.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_airm import _sample_data  # noqa: E402
from napari_airm.widgets import _defaults as D  # noqa: E402
from napari_airm.widgets._refine_job import NEW, RefineRequest, RefineResult  # noqa: E402


@pytest.fixture
def small_sample(monkeypatch):
    """The napari sample entry, at 256×320 so the test stays fast."""
    full = _sample_data.make_sample_labels
    monkeypatch.setattr(_sample_data, "make_sample_labels", lambda *a, **k: full(256, 320))


def names(widget_values):
    return [getattr(v, "name", v) for v in widget_values]


def check_sample_defaults(dock):
    refine, evaluate, retrain = dock.refine, dock.evaluate, dock.retrain
    assert refine.image.value.name == "AIRM sample image"
    assert refine.coarse.value.name == "coarse mask"
    assert evaluate.gt.value.name == "ground truth"
    assert evaluate.pred.value is not evaluate.gt.value
    assert evaluate.pred.value.name == "coarse mask"
    assert retrain.labels.value.name == "coarse mask"


@pytest.mark.parametrize("sample_first", [True, False], ids=["sample-then-dock", "dock-then-sample"])
def test_sample_defaults_in_either_order(make_napari_viewer, small_sample, sample_first):
    viewer = make_napari_viewer()
    if sample_first:
        viewer.open_sample("napari-airm", "airm-sample")
    _d, dock = viewer.window.add_plugin_dock_widget("napari-airm", "AIRM")
    if not sample_first:
        viewer.open_sample("napari-airm", "airm-sample")
    assert [layer.name for layer in viewer.layers] == ["AIRM sample image", "ground truth",
                                                      "coarse mask"]
    assert not viewer.layers["ground truth"].visible
    check_sample_defaults(dock)


def test_a_result_becomes_evaluates_prediction_but_not_refines_input(make_napari_viewer,
                                                                     small_sample):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-airm", "airm-sample")
    _d, dock = viewer.window.add_plugin_dock_widget("napari-airm", "AIRM")
    coarse = viewer.layers["coarse mask"]
    req = RefineRequest(image=None, mode=NEW, source_name=coarse.name,
                        source_colormap=coarse.colormap)
    dock.refine.apply(req, RefineResult(labels=np.array(coarse.data)))
    assert dock.refine.coarse.value.name == "coarse mask"  # never refine the result by default
    assert dock.evaluate.pred.value.name == "coarse mask refined"
    assert dock.evaluate.gt.value.name == "ground truth"
    assert dock.evaluate.coarse.value.name == "coarse mask"  # the gain is shown by default
    assert dock.retrain.labels.value.name == "coarse mask refined"  # what one corrects


def test_a_users_choice_survives_new_layers(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32)), name="img")
    first = viewer.add_labels(np.zeros((32, 32), np.uint8), name="nuclei")
    second = viewer.add_labels(np.zeros((32, 32), np.uint8), name="cells")
    _d, refine = viewer.window.add_plugin_dock_widget("napari-airm", "Refine")
    assert refine.coarse.value.name == "cells"  # the top one
    refine.coarse.value = refine.coarse.choices[1]  # the user picks "nuclei"
    assert refine.coarse.value.name == first.name
    viewer.add_labels(np.zeros((32, 32), np.uint8), name="rough mask")
    assert refine.coarse.value.name == "nuclei"
    viewer.layers.remove(first.name)  # its layer is gone: back to the default
    assert refine.coarse.value.name == "rough mask"
    assert second.name in names(refine.coarse.choices)


@pytest.mark.parametrize("name", ["ground truth", "GT", "gt_mask", "cells gt", "Ground-Truth",
                                  "truth", "reference"])
def test_truth_names(name):
    layer = type("Layer", (), {"name": name, "visible": True})()
    assert D.is_truth(layer)


@pytest.mark.parametrize("name", ["coarse mask", "target", "segmentation", "outline", "gtx"])
def test_not_truth_names(name):
    layer = type("Layer", (), {"name": name, "visible": True})()
    assert not D.is_truth(layer)


def test_coarse_default_prefers_visible_plain_layers():
    layer = lambda name, visible=True: type("Layer", (), {"name": name, "visible": visible})()  # noqa: E731
    gt, refined, hidden, labels = layer("ground truth"), layer("x refined"), layer("a", False), layer("b")
    assert D.coarse_default([gt, refined, hidden, labels]) is labels
    assert D.coarse_default([gt, refined, hidden]) is hidden
    assert D.coarse_default([gt, refined]) is refined
    assert D.coarse_default([gt]) is gt  # the only layer: offered, the user sees what it is
    assert D.prediction_default([gt, labels], truth=gt) is labels
    assert D.prediction_default([labels, refined, gt], truth=gt) is refined
    assert D.corrected_default([gt, labels]) is labels
