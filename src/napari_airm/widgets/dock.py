"""One dock for the whole annotation loop: Refine, Evaluate and Retrain as tabs.

``napari -w napari-airm`` opens a plugin's first widget; this is it, so one command gives all
three, and tabs keep napari's window small enough for a 1366×768 screen (one tab's height
instead of three stacked).
"""
from __future__ import annotations

from qtpy.QtWidgets import QScrollArea, QTabWidget, QVBoxLayout, QWidget

from .evaluate import EvaluateWidget
from .refine import RefineWidget
from .retrain import RetrainWidget


class AIRMWidget(QWidget):
    """Refine / Evaluate / Retrain tabs over one viewer (each tab is the standalone widget)."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.refine = RefineWidget(napari_viewer)
        self.evaluate = EvaluateWidget(napari_viewer)
        self.retrain = RetrainWidget(napari_viewer)
        self.tabs = QTabWidget()
        for widget, title in ((self.refine, "Refine"), (self.evaluate, "Evaluate"),
                              (self.retrain, "Retrain")):
            self.tabs.addTab(_scrolling(widget), title)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.tabs)

    def reset_choices(self, *_):
        for widget in (self.refine, self.evaluate, self.retrain):
            widget.reset_choices()


def _scrolling(widget: QWidget) -> QScrollArea:
    """A tab that scrolls rather than forcing the window taller than a laptop screen."""
    area = QScrollArea()
    area.setWidget(widget)
    area.setWidgetResizable(True)
    area.setFrameShape(QScrollArea.Shape.NoFrame)
    return area
