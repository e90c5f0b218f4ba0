"""Evaluate widget: the numbers equal napari_airm.metrics on the same arrays; CSV out."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_airm import metrics  # noqa: E402
from napari_airm._sample_data import make_sample_labels  # noqa: E402
from napari_airm.widgets import _layers  # noqa: E402


def evaluate(viewer, qtbot, pred="pred", gt="gt", coarse=None):
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-airm", "Evaluate")
    widget.pred.value = _layers.unwrap(viewer.layers[pred])
    widget.gt.value = _layers.unwrap(viewer.layers[gt])
    widget.coarse.value = None if coarse is None else _layers.unwrap(viewer.layers[coarse])
    assert widget.run() is not None, widget.status.value
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    return widget


@pytest.fixture
def three_layers(make_napari_viewer):
    _, coarse, gt = make_sample_labels(384, 512)
    rng = np.random.default_rng(1)
    pred = gt.copy()
    pred[rng.random(gt.shape) < 0.01] = 0  # a prediction that differs from both
    pred[150:170, 100:300] = 1
    viewer = make_napari_viewer()
    viewer.add_labels(gt, name="gt")
    viewer.add_labels(coarse, name="coarse")
    viewer.add_labels(pred, name="pred")
    return viewer, pred, gt, coarse


def test_numbers_equal_metrics(three_layers, qtbot):
    viewer, pred, gt, coarse = three_layers
    widget = evaluate(viewer, qtbot, coarse="coarse")
    rows = {r["object"]: r for r in widget.report["rows"]}
    assert set(rows) == {"id 1", "id 2", "all ids", "foreground (any id)"}
    for i in (1, 2):
        row = rows[f"id {i}"]
        assert row["iou"] == metrics.iou(pred == i, gt == i)
        assert row["mba"] == metrics.boundary_accuracy(pred == i, gt == i)
        assert row["ba_per_radius"] == metrics.boundary_accuracies(pred == i, gt == i)
        assert row["coarse_iou"] == metrics.iou(coarse == i, gt == i)
        assert row["coarse_mba"] == metrics.boundary_accuracy(coarse == i, gt == i)
        assert row["gain_iou"] == pytest.approx(row["iou"] - row["coarse_iou"])
    fg = rows["foreground (any id)"]
    assert fg["iou"] == metrics.iou(pred > 0, gt > 0)
    assert fg["mba"] == metrics.boundary_accuracy(pred > 0, gt > 0)
    # all ids: total intersection / total union, mean mBA (the dataset convention)
    scores = metrics.SegmentationScores()
    for i in (1, 2):
        scores.add(pred == i, gt == i)
    assert rows["all ids"]["iou"] == pytest.approx(scores.iou)
    assert rows["all ids"]["mba"] == pytest.approx(scores.mba)
    assert widget.report["radii"] == metrics.boundary_radii(*gt.shape)
    # the table and the plot show it
    assert widget.table.rowCount() == 4
    assert widget.table.item(0, 1).text() == f"{100 * rows['id 1']['iou']:.2f}"
    assert widget.plot.radii == widget.report["radii"] and "coarse" in widget.plot.series


def test_csv_copy_and_export(three_layers, qtbot, tmp_path):
    from qtpy.QtWidgets import QApplication

    viewer, pred, gt, _ = three_layers
    widget = evaluate(viewer, qtbot)
    widget.copy_button.native.click()
    text = QApplication.clipboard().text()
    table = list(csv.DictReader(io.StringIO(text)))
    assert [r["object"] for r in table] == ["id 1", "id 2", "all ids", "foreground (any id)"]
    assert float(table[0]["iou"]) == pytest.approx(metrics.iou(pred == 1, gt == 1))
    r1 = metrics.boundary_radii(*gt.shape)[0]
    assert float(table[0][f"ba_r{r1}"]) == pytest.approx(metrics.boundary_accuracies(pred == 1, gt == 1)[0])
    path = widget.export_csv(str(tmp_path / "eval.csv"))
    assert open(path).read() == text


def test_single_object_binary(make_napari_viewer, qtbot):
    _, coarse, gt = make_sample_labels(256, 320)
    viewer = make_napari_viewer()
    viewer.add_labels((gt > 0).astype(np.uint8), name="gt")
    viewer.add_labels((coarse > 0).astype(np.uint8), name="pred")
    widget = evaluate(viewer, qtbot)
    (row,) = widget.report["rows"]
    assert row["iou"] == metrics.iou(coarse > 0, gt > 0)
    assert row["mba"] == metrics.boundary_accuracy(coarse > 0, gt > 0)
