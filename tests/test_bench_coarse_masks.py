"""The benchmark's own coarse-mask generators (benchmarks/coarse_masks.py): reproducible, and the
near-identity modes are what their names say."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from conftest import disc_mask

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "coarse_masks.py"
_spec = importlib.util.spec_from_file_location("bench_coarse_masks", _PATH)
cm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cm)


def _iou(a, b) -> float:
    return np.count_nonzero(a & b) / max(1, np.count_nonzero(a | b))


@pytest.fixture
def gt():
    # two objects, one with a hole holding an island: every nesting level of an outline
    m = disc_mask(240, 320, (120, 110), 80) & ~disc_mask(240, 320, (120, 110), 40)
    m |= disc_mask(240, 320, (120, 110), 15)
    m |= disc_mask(240, 320, (60, 260), 35)
    return m


def test_gt_mode_returns_the_ground_truth_as_a_new_array(gt):
    out = cm.make_coarse(gt, "gt", seed=123)
    assert out.dtype == bool and np.array_equal(out, gt)
    out[0, 0] = not out[0, 0]
    assert gt[0, 0] == (not out[0, 0])  # a copy: the caller's mask is never aliased


def test_downup4_is_deterministic_and_near_perfect(gt):
    a, b = cm.make_coarse(gt, "downup4", seed=0), cm.make_coarse(gt, "downup4", seed=99)
    assert np.array_equal(a, b)
    assert 0.95 < _iou(a, gt) < 1.0


def test_polygon_is_seeded_reproducible_and_coarse(gt):
    a, b = cm.make_coarse(gt, "polygon", seed=7), cm.make_coarse(gt, "polygon", seed=7)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, cm.make_coarse(gt, "polygon", seed=8))
    assert 0.7 < _iou(a, gt) < 0.99
    assert a[120, 110] and not a[120, 160 - 15]  # the island and the hole survive
    assert not np.array_equal(gt, a)


def test_polygon_keeps_a_tiny_object_and_empty_stays_empty():
    tiny = disc_mask(200, 200, (100, 100), 2.5)  # erased by a x12 down-up alone
    assert cm.make_coarse(tiny, "polygon", seed=0).any()
    assert not cm.make_coarse(np.zeros((50, 60), bool), "polygon", seed=0).any()


def test_unknown_mode_is_refused(gt):
    with pytest.raises(ValueError, match="unknown coarse-mask mode"):
        cm.make_coarse(gt, "perturb")
