"""The paper's ablations on our data, every variant with the same (short) CPU budget.

    python benchmarks/bench_ablation.py --steps 500 --out runs/ablation --markdown ablation.md

Variants (DESIGN.md §2, the paper's Tables 2 and 3):

* ``airm-lite0``      AIRMF (hypernetwork weights), affinity loss on, EfficientNet-Lite0 (ImageNet)
* ``airm-lite0-noaff`` the same without the affinity loss
* ``sirm-lite0``      SIRMF (one shared MLP, CRM/LIIF), affinity loss on
* ``airm-b0``         AIRMF, affinity on, MiT-b0 (timm pvt_v2_b0) from scratch

Each trains from the bundled recipe (``cpu-default.yaml``) with the same seed, data order,
batch and step budget (learning-rate drop at 80 % of the steps), then is validated on the
first ``--val-limit`` DUTS-TR val images with the fixed coarse masks of both modes. A variant
whose run already finished is read back, not retrained, so the script can be re-run across
sessions; with ``--resume`` an interrupted variant continues from its last checkpoint.
A short budget measures how fast each variant learns, not where it ends: say so with the
numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from napari_airm.model.registry import model_config
from napari_airm.training import TrainConfig, train
from napari_airm.training.checkpoint import has_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "src" / "napari_airm" / "training" / "recipes" / "cpu-default.yaml"
DATA = ROOT.parent / "shared" / "data" / "duts-tr"

VARIANTS = {
    "airm-lite0": ("airm-lite0", {}),
    "airm-lite0-noaff": ("airm-lite0", {"affinity": False}),
    "sirm-lite0": ("sirm-lite0", {}),
    "airm-b0": ("airm-b0", {}),
    "sirm-b0": ("sirm-b0", {}),
}
DEFAULT_VARIANTS = "airm-lite0,airm-lite0-noaff,sirm-lite0,airm-b0"


def variant_config(name: str, steps: int, val_limit: int) -> TrainConfig:
    preset, overrides = VARIANTS[name]
    cfg = TrainConfig.load(RECIPE)
    cfg.model = model_config(preset, **overrides).to_dict()
    cfg.max_steps = steps
    cfg.milestones = [int(steps * 0.8)]
    cfg.warmup_steps = min(cfg.warmup_steps, steps // 5)
    cfg.checkpoint_every = max(50, steps // 4)
    cfg.val_every = steps
    cfg.val_limit = val_limit
    return cfg


def finished(out: Path, steps: int) -> dict | None:
    path = out / "val.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    done = [r for r in rows if r["step"] == steps]
    return done[-1] if done else None


def markdown(results: dict, steps: int, val_limit: int) -> str:
    lines = [f"Budget: {steps} steps each (batch 8, 224² crops, same seed and data order); "
             f"first {val_limit} DUTS-TR val images; IoU / mBA in percent.", "",
             "| variant | mapping | affinity | encoder | perturbed | low-resolution | min/run |",
             "|---|---|---|---|---:|---:|---:|"]
    coarse = None
    for name, r in results.items():
        m = r["model"]
        cells = []
        for mode in ("perturb", "lowres"):
            f = r["val"][mode]["refined"]
            cells.append(f"{100 * f['iou']:.2f} / {100 * f['mba']:.2f}")
        coarse = coarse or [r["val"][mode]["coarse"] for mode in ("perturb", "lowres")]
        enc = "MiT-b0 (scratch)" if m["encoder"].startswith("pvt") else "EfficientNet-Lite0 (ImageNet)"
        lines.append(f"| {name} | {m['mapping'].upper()}F | {'on' if m['affinity'] else 'off'} | {enc} | "
                     f"{cells[0]} | {cells[1]} | {r.get('minutes', float('nan')):.1f} |")
    if coarse:
        lines.append(f"| *coarse input* | | | | {100 * coarse[0]['iou']:.2f} / {100 * coarse[0]['mba']:.2f} | "
                     f"{100 * coarse[1]['iou']:.2f} / {100 * coarse[1]['mba']:.2f} | |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=DEFAULT_VARIANTS,
                   help=f"comma-separated, from {', '.join(VARIANTS)}")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--val-limit", type=int, default=100)
    p.add_argument("--data", type=Path, default=DATA / "train")
    p.add_argument("--val", type=Path, default=DATA / "val")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "ablation")
    p.add_argument("--resume", action="store_true", help="continue interrupted variants")
    p.add_argument("--markdown", type=Path, help="also write the table here")
    args = p.parse_args(argv)

    results = {}
    for name in args.variants.split(","):
        if name not in VARIANTS:
            p.error(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
        out = args.out / f"{name}-{args.steps}"
        cfg = variant_config(name, args.steps, args.val_limit)
        val = finished(out, args.steps)
        minutes = None
        if val is None:
            t0 = time.perf_counter()
            train(cfg, args.data, out, val=args.val, resume=args.resume and has_checkpoint(out / "checkpoint"),
                  progress=False)
            minutes = (time.perf_counter() - t0) / 60
            val = finished(out, args.steps)
            (out / "minutes.txt").write_text(f"{minutes:.2f}\n")
        elif (out / "minutes.txt").is_file():
            minutes = float((out / "minutes.txt").read_text())
        results[name] = {"model": cfg.model, "val": val, "minutes": minutes if minutes is not None else float("nan")}
        print(f"{name}: " + json.dumps({m: {k: round(100 * v, 2) for k, v in val[m]["refined"].items()
                                            if k in ("iou", "mba")} for m in ("perturb", "lowres")}),
              flush=True)
    table = markdown(results, args.steps, args.val_limit)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
