"""Apply the written rule (docs/performance.md, "The rule, written before the deciding numbers")
to one or more ``tune_boundary.py --json`` reports, so a decision is a command, not a reading.

    python benchmarks/apply_rule.py stage4=runs/grid5-stage4.json stage7=runs/grid5-stage7.json

Every (report, candidate) pair is a candidate; GrabCut's row comes from the first report that
has one (the coarse masks and GrabCut do not depend on the network). Rule:

1. Safety: admissible if the worst image of the good-mask modes (gt, downup4) loses at most
   ``SAFE`` IoU; if none is, those whose worst loss is within ``NEAR`` of the smallest.
2. IoU margin over GrabCut in every rough mode at least ``MARGIN``; if none, those whose
   smallest margin is within ``NEAR`` of the best smallest margin.
3. Highest mean mBA over the rough modes; within ``TIE`` of the best, the first listed (list
   the simpler candidates first: earlier reports, then the grid's order).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SAFE, NEAR, MARGIN, TIE = 0.5, 0.2, 1.0, 0.1
GOOD = ("gt", "downup4")
ROUGH = ("perturb", "lowres", "polygon")
REFERENCE = ("coarse", "grabcut")


def load(specs: list[str]) -> tuple[dict, dict]:
    """{(label, candidate): {mode: row}} and GrabCut's {mode: row}."""
    candidates, grabcut = {}, {}
    for spec in specs:
        label, _, path = spec.rpartition("=")
        report = json.loads(Path(path).read_text())["report"]
        for key, rows in report.items():
            mode = key.split("/")[-1]
            if "grabcut" in rows:
                grabcut.setdefault(mode, rows["grabcut"])
            for name, row in rows.items():
                if name not in REFERENCE:
                    candidates.setdefault((label or path, name), {})[mode] = row
    return candidates, grabcut


def decide(candidates: dict, grabcut: dict, out=sys.stdout) -> tuple:
    def worst(c):
        return min(candidates[c][m]["worst_delta_iou"] for m in GOOD)

    def margin(c):
        return min(candidates[c][m]["iou"] - grabcut[m]["iou"] for m in ROUGH)

    def mba(c):
        return sum(candidates[c][m]["mba"] for m in ROUGH) / len(ROUGH)

    print("| candidate | worst good-mask ΔIoU | smallest IoU margin over GrabCut | mean rough mBA |", file=out)
    print("|---|---:|---:|---:|", file=out)
    for c in candidates:
        print(f"| {c[0]}: {c[1]} | {worst(c):+.2f} | {margin(c):+.2f} | {mba(c):.2f} |", file=out)

    def at_least(pool, key, bar, step, why):
        """The candidates with key >= bar; if none, those within NEAR of the best (the fallback)."""
        kept = [c for c in pool if key(c) >= bar]
        if not kept:
            floor = max(key(c) for c in pool) - NEAR
            kept = [c for c in pool if key(c) >= floor]
            print(f"{step}. {why}: fallback, {floor:+.2f} or better", file=out)
        print(f"{step}. kept: {', '.join(f'{a}: {b}' for a, b in kept)}", file=out)
        return kept

    print(file=out)
    pool = at_least(list(candidates), worst, -SAFE, 1, f"no candidate keeps every good mask within {SAFE}")
    beat = at_least(pool, margin, MARGIN, 2, f"none beats GrabCut by {MARGIN} IoU in every rough mode")
    top = max(mba(c) for c in beat)
    winner = next(c for c in beat if mba(c) >= top - TIE)
    print(f"3. winner: {winner[0]}: {winner[1]} (mean rough mBA {mba(winner):.2f}; best {top:.2f})", file=out)
    return winner


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", help="LABEL=tune_boundary.json, simplest first")
    args = p.parse_args(argv)
    decide(*load(args.reports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
