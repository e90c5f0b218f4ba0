"""The ablation's decision rule (benchmarks/bench_ablation.py, issue 17): the verdict a claim gets
from its paired intervals is the rule written in docs/performance.md, checked on hand-made
intervals and per-image scores."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_ablation.py"
_spec = importlib.util.spec_from_file_location("bench_ablation", _PATH)
ab = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ab)


@pytest.mark.parametrize("intervals, expected", [
    ([(0.1, 0.9), (-0.5, 0.4)], "holds"),              # one wholly above 0, none below -0.2
    ([(0.1, 0.9), (-0.5, -0.1)], "holds"),             # below 0 but not below -0.2: still holds
    ([(0.1, 0.9), (-0.9, -0.3)], "not separated"),     # one up, one clearly down: a conflict
    ([(-0.4, -0.05), (-0.3, 0.2)], "refuted"),         # one wholly below 0, none above
    ([(-0.4, 0.3), (-0.1, 0.2)], "not separated"),     # every interval straddles 0
    ([(0.0, 0.5)], "not separated"),                   # touching 0 is not "wholly above"
])
def test_verdict_is_the_written_rule(intervals, expected):
    assert ab.verdict(intervals) == expected


def _scores(ious: list[float], mbas: list[float]) -> dict:
    rows = [{"name": f"im{i}", "coarse_iou": 0.5, "coarse_mba": 0.5, "iou": a, "mba": b}
            for i, (a, b) in enumerate(zip(ious, mbas))]
    return {mode: rows for mode in ab.MODES}


def test_a_part_that_helps_every_image_holds_and_one_that_hurts_is_refuted():
    base = _scores([0.80, 0.70, 0.90, 0.60], [0.60, 0.50, 0.70, 0.40])
    better = _scores([0.82, 0.72, 0.92, 0.62], [0.60, 0.50, 0.70, 0.40])  # +2 IoU points, mBA equal
    worse = _scores([0.78, 0.68, 0.88, 0.58], [0.60, 0.50, 0.70, 0.40])
    scores = {"airm-lite0": better, "sirm-lite0": base, "airm-lite0-noaff": base, "airm-b0": worse}
    diffs = ab.claim_intervals(scores, "airm-lite0", "sirm-lite0")
    assert diffs["perturb"]["iou"] == pytest.approx((2.0, 2.0, 2.0))
    assert diffs["lowres"]["mba"] == pytest.approx((0.0, 0.0, 0.0))
    # MiT-b0 over Lite0 compares airm-b0 with airm-lite0: 4 points worse on every image
    assert ab.verdicts(scores) == {"AIRMF over SIRMF": "holds", "affinity loss on over off": "holds",
                                   "MiT-b0 over Lite0": "refuted"}
    table = ab.paired_markdown(scores)
    assert "| AIRMF over SIRMF | perturb | +2.00 [+2.00, +2.00] | +0.00 [+0.00, +0.00] | 4 / 0 |" in table
    assert "MiT-b0 over Lite0 **refuted**" in table


def _groups(airm: list[float], sirm: list[float]) -> dict:
    def one(ious):
        return {f"g{i}": {mode: {"refined": {"iou": iou, "mba": 0.5}} for mode in ab.MODES}
                for i, iou in enumerate(ious)}
    return {"airm-lite0": one(airm), "sirm-lite0": one(sirm)}


def test_fig2b_keeps_the_hypernetwork_only_if_it_is_never_behind_and_once_clearly_ahead():
    assert ab.groups_favour_airmf(_groups([0.90, 0.806, 0.70], [0.90, 0.80, 0.70])) is True
    assert ab.groups_favour_airmf(_groups([0.90, 0.804, 0.70], [0.90, 0.80, 0.70])) is False  # +0.4
    assert ab.groups_favour_airmf(_groups([0.95, 0.80, 0.699], [0.90, 0.80, 0.70])) is False  # one behind
    assert ab.groups_favour_airmf({"airm-lite0": {}}) is None


def test_decisions_follow_the_verdicts():
    claims = {"AIRMF over SIRMF": "not separated", "affinity loss on over off": "not separated",
              "MiT-b0 over Lite0": "not separated"}
    text = "\n".join(ab.decisions(claims, groups_ok=False))
    assert "Hypernetwork: next retrain uses SIRMF" in text
    assert "Affinity loss: keep" in text and "Encoder: Lite0 stands" in text
    assert "Hypernetwork: keep" in "\n".join(ab.decisions(claims, groups_ok=True))
    refuted = dict(claims, **{"affinity loss on over off": "refuted", "MiT-b0 over Lite0": "holds"})
    text = "\n".join(ab.decisions(refuted, groups_ok=None))
    assert "Affinity loss: drop" in text and "MiT-b0 replaces Lite0" in text
