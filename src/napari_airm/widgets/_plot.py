"""A small line chart (boundary accuracy per radius) drawn with QPainter: no plotting dependency."""
from __future__ import annotations

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

COLOURS = {"refined": QColor(255, 140, 40), "coarse": QColor(120, 170, 255)}


class RadiusPlot(QWidget):
    """Boundary accuracy (%) against radius (px) for one or more series."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(170)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.radii: list[int] = []
        self.series: dict[str, list[float]] = {}
        self.title = ""

    def set_data(self, radii, series: dict[str, list[float]], title: str = "") -> None:
        self.radii, self.series, self.title = list(radii), dict(series), title
        self.update()

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        fg = self.palette().windowText().color()
        left, top, right, bottom = 44, 22, 12, 30
        area = QRectF(left, top, max(10, self.width() - left - right),
                      max(10, self.height() - top - bottom))
        p.setPen(QPen(fg, 1))
        p.drawText(QRectF(0, 0, self.width(), top), Qt.AlignmentFlag.AlignCenter,
                   self.title or "boundary accuracy per radius")
        if not self.radii or not self.series:
            p.drawText(area, Qt.AlignmentFlag.AlignCenter, "run an evaluation")
            p.end()
            return
        values = [v for s in self.series.values() for v in s]
        lo = max(0.0, min(values) - 0.05)
        hi = min(1.0, max(values) + 0.02) if max(values) > lo else lo + 0.1
        n = len(self.radii)

        def at(i, v):
            x = area.left() + (area.width() * i / (n - 1) if n > 1 else area.width() / 2)
            return QPointF(x, area.bottom() - (v - lo) / (hi - lo) * area.height())

        p.drawRect(area)
        for k in range(5):  # y grid and labels
            v = lo + (hi - lo) * k / 4
            y = at(0, v).y()
            p.setPen(QPen(QColor(128, 128, 128, 80), 1))
            p.drawLine(QPointF(area.left(), y), QPointF(area.right(), y))
            p.setPen(QPen(fg, 1))
            p.drawText(QRectF(0, y - 8, left - 4, 16), Qt.AlignmentFlag.AlignRight, f"{100 * v:.0f}%")
        for i, r in enumerate(self.radii):  # x labels: the radii
            x = at(i, lo).x()
            p.drawText(QRectF(x - 20, area.bottom() + 2, 40, 14), Qt.AlignmentFlag.AlignCenter, str(r))
        p.drawText(QRectF(area.left(), area.bottom() + 14, area.width(), 14),
                   Qt.AlignmentFlag.AlignCenter, "radius (px)")
        for j, (name, vals) in enumerate(self.series.items()):
            colour = COLOURS.get(name, QColor(200, 200, 200))
            pen = QPen(colour, 2, Qt.PenStyle.SolidLine if name == "refined" else Qt.PenStyle.DashLine)
            p.setPen(pen)
            pts = [at(i, v) for i, v in enumerate(vals)]
            for a, b in zip(pts, pts[1:]):
                p.drawLine(a, b)
            for q in pts:
                p.drawEllipse(q, 2.5, 2.5)
            p.drawText(QPointF(area.left() + 6, area.top() + 14 + 14 * j), name)
        p.end()
