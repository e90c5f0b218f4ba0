"""Choose the trust region's and the boundary solve's constants: run the network once per
case, keep what the final step sees (per tile: the network's probability, the image, the given
mask around it), then replay the final step under every candidate setting.

    python benchmarks/tune_boundary.py --limit 100                      # DUTS val, 5 coarse modes
    python benchmarks/tune_boundary.py --sets val,extra --limit 60 --json tune.json

Each candidate is one JSON object of constants (``engine/reach.py`` REACH_SHARE, CORE_SHARE,
CORE_RULE; ``engine/solve.py`` BAND, NET, COLOUR, GIVEN, PAIRWISE; ``solve`` on/off; ``reach``
None for the network alone; ``grabcut_band`` N: GrabCut in an N-px band around the result, the
probe of issue 13), given with ``--grid FILE`` or the built-in grid below. The table
reports, per set and coarse mode, IoU / mBA of every candidate and the worst image's IoU change
against its coarse mask, so the rule in docs/performance.md ("Trust region and boundary
solve") can be applied to it as written.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quality as bq  # noqa: E402  (the benchmark's sets and coarse modes)

from napari_airm.baselines import grabcut_refine  # noqa: E402
from napari_airm.engine import reach as reach_mod  # noqa: E402
from napari_airm.engine import refine as refine_mod  # noqa: E402
from napari_airm.engine import solve as solve_mod  # noqa: E402
from napari_airm.metrics import SegmentationScores  # noqa: E402

CAPTURE_REACH = 400  # pixels: the widest reach any candidate may use (tiles are skipped beyond it)

DEFAULT_GRID = [
    {"name": "network", "reach": None, "solve": False},
    {"name": "reach-local", "solve": False, "CORE_RULE": "local"},
    {"name": "reach-component", "solve": False, "CORE_RULE": "component"},
    {"name": "solve-local", "CORE_RULE": "local"},
    {"name": "solve-component", "CORE_RULE": "component"},
]


@dataclass
class Case:
    name: str
    coarse: np.ndarray
    gt: np.ndarray
    image: np.ndarray
    tiles: list = field(default_factory=list)  # (tile, win, outer, prob, given_outer, rgb, trust)
    grabcut: np.ndarray | None = None


def capture(model, image, coarse) -> list:
    """Run the engine once; return what ``BinaryRefiner._finish`` saw for every computed tile."""
    seen = []

    def recording_finish(self, image_src, tile, prob, prob_box):
        win = self.finish_window(tile, prob_box)
        p = prob[win[0] - prob_box[0]:win[1] - prob_box[0], win[2] - prob_box[2]:win[3] - prob_box[2]]
        outer = self._around(win, self.reach.halo)
        seen.append((tile, win, outer, p.astype(np.float32).copy(), self._read_mask(outer) > 0.5,
                     image_src.read(win), self.trust))
        return p[tile[0] - win[0]:tile[1] - win[0], tile[2] - win[2]:tile[3] - win[2]] > 0.5

    original = refine_mod.BinaryRefiner._finish
    refine_mod.BinaryRefiner._finish = recording_finish
    try:
        # an explicit reach without the object cap: the halo covers every candidate's rule
        refine_mod.refine_array(image, coarse, model, device=_cpu(), reach=CAPTURE_REACH // 5)
    finally:
        refine_mod.BinaryRefiner._finish = original
    return seen


def _cpu():
    import torch

    return torch.device("cpu")


def replay(case: Case, candidate: dict) -> np.ndarray:
    """The final mask of ``case`` under ``candidate``'s constants."""
    constants = {k: v for k, v in candidate.items() if k.isupper()}
    saved = {}
    for key, value in constants.items():
        module = reach_mod if hasattr(reach_mod, key) else solve_mod
        saved[(module, key)] = getattr(module, key)
        setattr(module, key, value)
    try:
        h, w = case.coarse.shape
        out = case.coarse.copy()
        use_reach = candidate.get("reach", "auto")
        reach = reach_mod.resolve_reach(use_reach, h, w)
        shift = candidate.get("shift")
        for tile, win, outer, prob, given_outer, rgb, *rest in case.tiles:
            trust = rest[0] if rest and candidate.get("trust", True) else 1.0
            if shift:
                prob = _shifted(prob, *shift)
            inner = (slice(win[0] - outer[0], win[1] - outer[0]), slice(win[2] - outer[2], win[3] - outer[2]))
            given = given_outer[inner]
            allowed = None
            if reach is not None:
                # recompute on the captured window, cropped to this candidate's halo
                o = (max(outer[0], win[0] - reach.halo), min(outer[1], win[1] + reach.halo),
                     max(outer[2], win[2] - reach.halo), min(outer[3], win[3] + reach.halo))
                sub = given_outer[o[0] - outer[0]:o[1] - outer[0], o[2] - outer[2]:o[3] - outer[2]]
                allowed = reach.allowed(sub)[win[0] - o[0]:win[1] - o[0], win[2] - o[2]:win[3] - o[2]]
            if candidate.get("solve", True):
                final = solve_mod.solve_boundary(rgb, prob, given, allowed, trust=trust)
            elif allowed is not None:
                final = np.where(allowed, (trust * prob + (1 - trust) * given) > 0.5, given)
            else:
                final = prob > 0.5
            out[tile[0]:tile[1], tile[2]:tile[3]] = \
                final[tile[0] - win[0]:tile[1] - win[0], tile[2] - win[2]:tile[3] - win[2]]
        if candidate.get("grabcut_band"):
            out = grabcut_refine(case.image, out, iterations=3, band=candidate["grabcut_band"])
        return out
    finally:
        for (module, key), value in saved.items():
            setattr(module, key, value)


def case_sets(sets: str, limit: int, data_root: Path | None, skip: int = 0) -> list:
    """bench_quality's sets (same images, same seeded coarse masks). ``skip``: val starts at
    its skip-th image (a deciding run on images the exploration did not see)."""
    import os

    from napari_airm.data import find_pairs

    args = bq.build_parser().parse_args(["--sets", sets, "--limit", str(limit)])
    args.data_root = (data_root or Path(os.environ.get(bq.DATA_ENV) or bq.DEFAULT_DATA_ROOT)).expanduser()
    args.data = args.data or args.data_root / "duts-tr" / "val"
    if not skip:
        return bq.build_sets(args, sets.split(","), [])
    if sets != "val":
        raise SystemExit("--skip applies to the val set alone")
    names = [pair.name for pair in find_pairs(args.data)[skip:skip + limit]]
    return [bq.folder_set("val", f"val: {args.data} (images {skip + 1}-{skip + len(names)})",
                          args.data, names, None, bq.seeded_by("val"))]


def _shifted(prob: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """``prob`` moved by (dy, dx) pixels (bilinear, edge values beyond the border)."""
    import cv2

    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(prob, m, (prob.shape[1], prob.shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def load_cases(sets: list, modes: list[str], model, with_grabcut: bool, seed: int = 0):
    out = {}
    for case_set in sets:
        set_name = case_set.key
        for mode in modes:
            cases = []
            for name, image, coarse, gt in bq.cases(case_set, mode, seed):
                case = Case(name, np.asarray(coarse, bool), np.asarray(gt, bool), image)
                case.tiles = capture(model, image, case.coarse)
                if with_grabcut:
                    case.grabcut = grabcut_refine(image, case.coarse)
                cases.append(case)
            out[(set_name, mode)] = cases
            print(f"captured {set_name}/{mode}: {len(cases)} cases", file=sys.stderr, flush=True)
    return out


def score(cases: list[Case], results: list[np.ndarray]) -> dict:
    total, coarse_total = SegmentationScores(), SegmentationScores()
    worst = (np.inf, "", 0.0, 0.0)
    losing = 0
    for case, result in zip(cases, results):
        c = coarse_total.add(case.coarse, case.gt)
        r = total.add(result, case.gt)
        delta = r["iou"] - c["iou"]
        losing += delta < -0.005
        if delta < worst[0]:
            worst = (delta, case.name, c["iou"], r["iou"])
    s = total.summary()
    return {"iou": 100 * s["iou"], "mba": 100 * s["mba"], "worst_delta_iou": 100 * worst[0],
            "worst": worst[1], "worst_from": 100 * worst[2], "worst_to": 100 * worst[3],
            "losing": losing}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default="val")
    p.add_argument("--modes", default="perturb,lowres,polygon,gt,downup4")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--skip", type=int, default=0, help="val: start after this many images")
    p.add_argument("--grid", help="JSON file: a list of candidates (default: the built-in grid)")
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--no-grabcut", action="store_true")
    p.add_argument("--json", type=Path)
    p.add_argument("--cache", type=Path, help="pickle of the captured cases: written after a "
                   "capture, read instead of capturing when it exists")
    args = p.parse_args(argv)
    import napari_airm as airm

    grid = json.loads(Path(args.grid).read_text()) if args.grid else DEFAULT_GRID
    t0 = time.perf_counter()
    if args.cache and args.cache.exists():
        import pickle

        groups = pickle.loads(args.cache.read_bytes())
    else:
        model = airm.load_model(args.model, device="cpu")
        groups = load_cases(case_sets(args.sets, args.limit, args.data_root, args.skip), args.modes.split(","),
                            model, not args.no_grabcut)
        if args.cache:
            import pickle

            args.cache.write_bytes(pickle.dumps(groups, protocol=5))
    print(f"capture: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    report = {}
    for (set_name, mode), cases in groups.items():
        rows = {"coarse": score(cases, [c.coarse for c in cases])}
        if not args.no_grabcut:
            rows["grabcut"] = score(cases, [c.grabcut for c in cases])
        for cand in grid:
            t = time.perf_counter()
            rows[cand["name"]] = score(cases, [replay(c, cand) for c in cases])
            rows[cand["name"]]["seconds"] = (time.perf_counter() - t) / max(1, len(cases))
        report[f"{set_name}/{mode}"] = rows
        print(f"\n### {set_name} / {mode} ({len(cases)} images)\n")
        print("| candidate | IoU | mBA | images losing > 0.5 IoU | worst ΔIoU (image: coarse → refined) |")
        print("|---|---:|---:|---:|---|")
        for name, r in rows.items():
            print(f"| {name} | {r['iou']:.2f} | {r['mba']:.2f} | {r['losing']} | {r['worst_delta_iou']:+.2f} "
                  f"({r['worst']}: {r['worst_from']:.2f} → {r['worst_to']:.2f}) |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"grid": grid, "report": report}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
