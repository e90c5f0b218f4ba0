"""Evaluate widget: prediction vs ground truth (and optional coarse) Labels → IoU / mBA table,
boundary accuracy per radius plot, CSV copy/export. Numbers come from ``napari_airm.api.evaluate``.
"""
from __future__ import annotations

import csv
import io
from functools import partial
from typing import Callable

import numpy as np
from magicgui.widgets import Container, PushButton
from qtpy.QtWidgets import (QAbstractItemView, QApplication, QFileDialog, QTableWidget,
                            QTableWidgetItem, QVBoxLayout, QWidget)

from . import _defaults as D
from . import _layers as L
from ._plot import RadiusPlot
from ._worker import JobControls, Outcome, avoid_llvm_clash, status_label

NONE = "(none)"
COLUMNS = ["object", "iou", "mba", "coarse_iou", "coarse_mba", "gain_iou", "gain_mba"]


def _ids(*arrays) -> list[int]:
    return sorted({i for a in arrays if a is not None for i in L.label_ids(a)})


def evaluate_arrays(pred, gt, coarse=None, report: Callable = lambda d, t, i=None: None,
                    cancelled: Callable[[], bool] = lambda: False) -> dict:
    """Per id, all ids together (total intersection / total union, mean mBA) and foreground.

    Returns ``{"rows": [...], "radii": [...]}``; each row has the columns of ``COLUMNS`` plus
    ``ba_per_radius`` (and ``coarse_ba_per_radius``), all as fractions.
    """
    from .. import api
    from ..metrics import boundary_radii

    pred, gt = np.asarray(pred), np.asarray(gt)
    coarse = None if coarse is None else np.asarray(coarse)
    ids = _ids(pred, gt)
    if not ids:
        raise L.LayerError("both the prediction and the ground truth are empty: nothing to measure")
    rows, inter, union = [], 0, 0
    for k, i in enumerate(ids):
        if cancelled():
            from ..engine.errors import Cancelled

            raise Cancelled("cancelled")
        report(k, len(ids) + 1)
        p, g = pred == i, gt == i
        rows.append(_row(api.evaluate(p, g, None if coarse is None else coarse == i), f"id {i}"))
        inter, union = inter + int(np.count_nonzero(p & g)), union + int(np.count_nonzero(p | g))
    if len(ids) > 1:
        agg = {"object": "all ids", "iou": 1.0 if union == 0 else inter / union,
               "mba": float(np.mean([r["mba"] for r in rows]))}
        if coarse is not None:
            agg["coarse_iou"], agg["coarse_mba"] = _coarse_aggregate(coarse, gt, ids, rows)
            agg["gain_iou"], agg["gain_mba"] = agg["iou"] - agg["coarse_iou"], agg["mba"] - agg["coarse_mba"]
        rows.append(agg)
        fg = api.evaluate(pred > 0, gt > 0, None if coarse is None else coarse > 0)
        rows.append(_row(fg, "foreground (any id)"))
    report(len(ids) + 1, len(ids) + 1)
    return {"rows": rows, "radii": boundary_radii(*gt.shape)}


def _coarse_aggregate(coarse, gt, ids, rows) -> tuple[float, float]:
    inter = sum(int(np.count_nonzero((coarse == i) & (gt == i))) for i in ids)
    union = sum(int(np.count_nonzero((coarse == i) | (gt == i))) for i in ids)
    return (1.0 if union == 0 else inter / union), float(np.mean([r["coarse_mba"] for r in rows]))


def _row(rep: dict, name: str) -> dict:
    one = rep["per_image"][0]
    row = {"object": name, "iou": one["refined_iou"], "mba": one["refined_mba"],
           "ba_per_radius": list(one["refined_ba_per_radius"])}
    if "coarse" in rep:
        row.update(coarse_iou=one["coarse_iou"], coarse_mba=one["coarse_mba"],
                   coarse_ba_per_radius=list(one["coarse_ba_per_radius"]),
                   gain_iou=one["refined_iou"] - one["coarse_iou"],
                   gain_mba=one["refined_mba"] - one["coarse_mba"])
    return row


def report_csv(report: dict) -> str:
    radii = report["radii"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS + [f"ba_r{r}" for r in radii] + [f"coarse_ba_r{r}" for r in radii])
    for row in report["rows"]:
        w.writerow([row.get(c, "") for c in COLUMNS]
                   + list(row.get("ba_per_radius", [""] * len(radii)))
                   + list(row.get("coarse_ba_per_radius", [""] * len(radii))))
    return buf.getvalue()


class EvaluateWidget(JobControls, QWidget):
    """Measure a prediction Labels layer against ground truth the way the field reports it."""

    def __init__(self, napari_viewer):
        super().__init__()
        avoid_llvm_clash()  # before the first torch/timm import (model lists, training, refine)
        self.viewer = napari_viewer
        self.report: dict | None = None
        labels = L.layer_choices(self, "Labels")
        self.pred = L.name_choice("prediction", choices=labels)
        self.gt = L.name_choice("ground truth", choices=labels)
        self.coarse = L.name_choice("coarse (optional)", choices=lambda w: [(NONE, None)] + labels())
        self.run_button = PushButton(text="Evaluate")
        self.start_button = self.run_button
        self.copy_button = PushButton(text="Copy CSV", enabled=False)
        self.export_button = PushButton(text="Export CSV…", enabled=False)
        self.status = status_label()
        self.form = Container(widgets=[self.pred, self.gt, self.coarse])
        self.buttons = Container(widgets=[self.run_button, self.copy_button, self.export_button],
                                 layout="horizontal", labels=False)
        self.table = QTableWidget(0, 7)
        self.table.setHorizontalHeaderLabels(["object", "IoU", "mBA", "coarse IoU", "coarse mBA",
                                              "Δ IoU", "Δ mBA"])
        self.table.horizontalHeaderItem(0).setToolTip("all numbers in %; Δ in percentage points")
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.itemSelectionChanged.connect(self._plot_selected)
        self.table.setMinimumWidth(0)
        self._fit_table_height()
        self.plot = RadiusPlot()
        self.plot.setMinimumHeight(170)
        layout = QVBoxLayout(self)
        for w in (self.form.native, self.buttons.native, self.status.native, self.table, self.plot):
            layout.addWidget(w)
        layout.addStretch(1)
        self.run_button.changed.connect(self.run)
        self.copy_button.changed.connect(self.copy_csv)
        self.export_button.changed.connect(lambda: self.export_csv())
        self._defaults = [
            D.DefaultChoice(self.gt, lambda: D.truth_default(D.layer_choices(self.gt))),
            D.DefaultChoice(self.pred, lambda: D.prediction_default(D.layer_choices(self.pred),
                                                                    self.gt.value)),
            D.DefaultChoice(self.coarse, lambda: D.baseline_default(
                D.layer_choices(self.coarse), self.pred.value, self.gt.value))]
        L.follow(self, napari_viewer, self.reset_choices)
        self.reset_choices()

    def reset_choices(self, *_):
        self.form.reset_choices()
        for choice in self._defaults:
            choice.refresh()

    def _fit_table_height(self, rows: int = 4) -> None:
        """Tall enough for ``rows`` rows (two ids, all ids, foreground) without scrolling; at
        most 6 (more ids scroll; the aggregate rows are last and selected, so shown)."""
        rows = min(rows, 6)
        table = self.table
        row = table.verticalHeader().defaultSectionSize()
        scroll = table.horizontalScrollBar().sizeHint().height()
        height = (table.horizontalHeader().sizeHint().height() + row * max(rows, 1) + scroll
                  + 2 * table.frameWidth())
        table.setFixedHeight(height)

    # -- the job (JobControls runs it) ----------------------------------------------------
    def make_request(self):
        """The evaluation to run, as a function of (report, cancelled)."""
        from napari.layers import Labels

        pred, gt, coarse = self.pred.value, self.gt.value, self.coarse.value
        if not isinstance(pred, Labels) or not isinstance(gt, Labels):
            raise L.LayerError("choose a prediction and a ground-truth Labels layer")
        if pred is gt:
            raise L.LayerError("the prediction and the ground truth are the same layer")
        L.check_same_size(gt, pred)
        if coarse is not None:
            L.check_same_size(gt, coarse)
        return partial(evaluate_arrays, L.level0(pred), L.level0(gt),
                       None if coarse is None else L.level0(coarse))

    def starting_text(self, _req) -> str:
        return "evaluating…"

    def job_function(self, req):
        return req

    def job_finished(self, _req, outcome: Outcome) -> None:
        if outcome.cancelled:
            self.status.value = "cancelled"
        else:
            self.show_report(outcome.value)

    def show_report(self, report: dict) -> None:
        self.report = report
        rows = report["rows"]
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            cells = [row["object"]] + [_pct(row.get(c)) for c in COLUMNS[1:5]] \
                + [_signed(row.get(c)) for c in COLUMNS[5:]]
            for c, text in enumerate(cells):
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        self._fit_table_height(len(rows))
        self.copy_button.enabled = self.export_button.enabled = True
        last = rows[-1]
        self.status.value = f"{last['object']}: IoU {100 * last['iou']:.2f}%, mBA {100 * last['mba']:.2f}%"
        self.table.selectRow(len(rows) - 1)
        self._plot_selected()

    def _plot_selected(self) -> None:
        if not self.report:
            return
        rows = self.table.selectionModel().selectedRows()
        row = self.report["rows"][rows[0].row() if rows else -1]
        if "ba_per_radius" not in row:
            row = self.report["rows"][-1]
        series = {"refined": row["ba_per_radius"]}
        if "coarse_ba_per_radius" in row:
            series["coarse"] = row["coarse_ba_per_radius"]
        self.plot.set_data(self.report["radii"], series, f"boundary accuracy per radius: {row['object']}")

    def csv_text(self) -> str:
        return report_csv(self.report) if self.report else ""

    def copy_csv(self, *_) -> None:
        QApplication.clipboard().setText(self.csv_text())
        self.status.value = "copied the table as CSV"

    def export_csv(self, path: str | None = None) -> str | None:
        if not self.report:
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export CSV", "airm-evaluation.csv", "CSV (*.csv)")
            if not path:
                return None
        with open(path, "w", newline="") as f:
            f.write(self.csv_text())
        self.status.value = f"saved {path}"
        return path


def _pct(v) -> str:
    return "" if v is None else f"{100 * v:.2f}"


def _signed(v) -> str:
    return "" if v is None else f"{100 * v:+.2f}"
