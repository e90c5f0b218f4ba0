"""Which layer a widget offers first: the one an annotator would pick, not just the top one.

A hidden "ground truth" layer or an earlier result is never the *coarse mask* by default
(refining the truth looks perfect and misleads), Evaluate never compares a layer with itself,
and Retrain does not train on the ground truth by accident. The rules read layer names and
visibility only, so they are cheap and predictable; a choice the user made is kept.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

TRUTH = re.compile(r"ground[\s_-]*truth|(^|[^a-z0-9])(gt|truth|reference)([^a-z0-9]|$)", re.I)
RESULT = re.compile(r"refined", re.I)
COARSE = re.compile(r"coarse|rough|mask|sketch|annotation", re.I)


def is_truth(layer) -> bool:
    return bool(TRUTH.search(layer.name))


def is_result(layer) -> bool:
    return bool(RESULT.search(layer.name))


def _first(layers: Sequence, *tests: Callable[[object], bool]):
    """The first layer (top of the layer list first) passing every test, else None."""
    for layer in layers:
        if all(test(layer) for test in tests):
            return layer
    return None


def _visible(layer) -> bool:
    return bool(getattr(layer, "visible", True))


def coarse_default(layers: Sequence):
    """Refine's coarse mask: a visible layer that is neither the truth nor a result, preferring
    one named like a rough mask; then any such layer; the truth never while something else is
    there. ``layers``: candidates, top of the layer list first."""
    plain = lambda layer: not is_truth(layer) and not is_result(layer)  # noqa: E731
    return (_first(layers, plain, _visible, lambda layer: bool(COARSE.search(layer.name)))
            or _first(layers, plain, _visible) or _first(layers, plain)
            or _first(layers, lambda layer: not is_truth(layer)) or _first(layers))


def truth_default(layers: Sequence):
    """Evaluate's ground truth: a layer named like one (even hidden, as the sample's is), else
    one that is neither a result nor named like a rough mask, else a non-result."""
    not_result = lambda layer: not is_result(layer)  # noqa: E731
    return (_first(layers, is_truth)
            or _first(layers, not_result, lambda layer: not COARSE.search(layer.name))
            or _first(layers, not_result) or _first(layers))


def prediction_default(layers: Sequence, truth=None):
    """Evaluate's prediction: the newest refined result, else a visible non-truth layer; never
    ``truth`` while another layer is there."""
    other = lambda layer: layer is not truth and not is_truth(layer)  # noqa: E731
    return (_first(layers, other, is_result) or _first(layers, other, _visible)
            or _first(layers, other) or _first(layers, lambda layer: layer is not truth))


def baseline_default(layers: Sequence, prediction=None, truth=None):
    """Evaluate's optional coarse layer: the mask the prediction was refined from
    (``"<name> refined"`` → ``<name>``), else a coarse-named layer; None when there is none."""
    if prediction is not None and is_result(prediction):
        source = RESULT.split(prediction.name)[0].strip()
        match = _first(layers, lambda layer: layer.name == source)
        if match is not None and match is not truth:
            return match
    return _first(layers, lambda layer: layer is not prediction and layer is not truth,
                  lambda layer: not is_truth(layer) and not is_result(layer),
                  lambda layer: bool(COARSE.search(layer.name)))


def corrected_default(layers: Sequence):
    """Retrain's corrected labels: the newest refined result (what one corrects), else a
    non-truth layer; the truth only when nothing else is open."""
    not_truth = lambda layer: not is_truth(layer)  # noqa: E731
    return (_first(layers, not_truth, is_result) or _first(layers, not_truth, _visible)
            or _first(layers, not_truth) or _first(layers))


def image_default(layers: Sequence):
    """The image: the top visible one, else the top one."""
    return _first(layers, _visible) or _first(layers)


class DefaultChoice:
    """Keeps a magicgui ComboBox on its default layer until the user picks another.

    ``pick()`` gives the default from the current choices. After every choices refresh (layers
    added, removed, reordered) the box moves to the new default unless the user chose another
    value since the last refresh and that layer is still there. So the sample opened after
    docking ends on the right layers, and a layer added later never steals a user's choice.
    """

    def __init__(self, combo, pick: Callable[[], object]) -> None:
        self.combo, self.pick = combo, pick
        self._auto = self._last = None
        self._started = False

    def refresh(self) -> None:
        current = self.combo.value
        # magicgui shows the first choice when the shown layer was removed or none was shown
        fell_back = self._last is None or not _offered(self.combo, self._last)
        users = self._started and current is not None and current is not self._auto and not fell_back
        if not users:
            default = self.pick()
            if default is not None or _offered(self.combo, None):
                self.combo.value = default
            self._auto = self.combo.value
        self._started, self._last = True, self.combo.value


def _offered(combo, value) -> bool:
    return any(choice is value for choice in combo.choices)


def layer_choices(combo) -> list:
    """The layers a ComboBox offers (its data values, Nones left out), in its order."""
    return [value for value in combo.choices if value is not None and not isinstance(value, str)]
