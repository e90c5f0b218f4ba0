"""The paper's ablations on our data, every variant with the same CPU budget (issue 17).

    python benchmarks/bench_ablation.py --steps 3000 --val-every 1000 --val-limit 500 --resume \\
        --logs docs/training-logs/ablation --markdown runs/ablation-3000.md

Variants (DESIGN.md §2, the paper's Tables 2 and 3):

* ``airm-lite0``       AIRMF (hypernetwork weights), affinity loss on, EfficientNet-Lite0 (ImageNet)
* ``sirm-lite0``       SIRMF (one shared MLP, CRM/LIIF), affinity loss on
* ``airm-lite0-noaff`` AIRMF without the affinity loss
* ``airm-b0``          AIRMF, affinity on, MiT-b0 (timm pvt_v2_b0) from scratch

Each trains from the bundled recipe (``cpu-default.yaml``) with the same seed, data order,
coarse masks, batch and step budget (learning-rate drop at 80 % of the steps); parts that two
variants share start from identical weights (``start_model``: copied from one reference). Every
``--val-every`` steps the network alone (no trust region, no boundary solve: the paper's kind of
number) is validated on the first ``--val-limit`` DUTS-TR val images with the fixed coarse
masks of both modes. A variant whose run finished is read back, not retrained; ``--resume``
continues an interrupted one from its last checkpoint (every 250 steps), so the whole ablation
can run in the background across sessions. ``--logs`` copies each variant's small files
(training log, validation curve, config, wall time) to a folder meant for the repository.

``--groups`` runs the paper's Fig. 2(b) experiment in small afterwards (see ``group_experiment``).
``--time-steps N`` only times every variant in one run: N training steps (synthetic crops, the
trainer's layout) and 20 val images refined by the network alone. That is the comparable cost,
which a run's wall time is not when other work shared the CPU.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from napari_airm.model import save_model
from napari_airm.model.registry import build_model, model_config
from napari_airm.training import TrainConfig, train
from napari_airm.training.checkpoint import has_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "src" / "napari_airm" / "training" / "recipes" / "cpu-default.yaml"
SHARED = ROOT.parent / "shared" / "data"
DATA = SHARED / "duts-tr"

VARIANTS = {
    "airm-lite0": ("airm-lite0", {}),
    "sirm-lite0": ("sirm-lite0", {}),
    "airm-lite0-noaff": ("airm-lite0", {"affinity": False}),
    "airm-b0": ("airm-b0", {}),
    "sirm-b0": ("sirm-b0", {}),
}
DEFAULT_VARIANTS = "airm-lite0,sirm-lite0,airm-lite0-noaff,airm-b0"
MODES = ("perturb", "lowres")
SMALL_FILES = ("log.csv", "val.jsonl", "train_config.yaml", "minutes.txt", "groups.json", "per_image.json")
# the paper's three claims as (claim, variant with the part, variant without it)
CLAIMS = (("AIRMF over SIRMF", "airm-lite0", "sirm-lite0"),
          ("affinity loss on over off", "airm-lite0", "airm-lite0-noaff"),
          ("MiT-b0 over Lite0", "airm-b0", "airm-lite0"))


def variant_config(name: str, steps: int, val_limit: int, val_every: int | None = None) -> TrainConfig:
    preset, overrides = VARIANTS[name]
    cfg = TrainConfig.load(RECIPE)
    cfg.model = model_config(preset, **overrides).to_dict()
    cfg.max_steps = steps
    cfg.milestones = [int(steps * 0.8)]
    cfg.warmup_steps = min(cfg.warmup_steps, steps // 5)
    cfg.checkpoint_every = max(1, min(250, steps // 4))
    cfg.val_every = val_every or steps
    cfg.val_limit = val_limit
    cfg.val_modes = list(MODES)
    return cfg


def start_model(name: str, seed: int, dest: Path) -> Path:
    """The variant's initial weights, saved in full precision: freshly built from ``seed``, then
    every tensor it shares (same name and shape) with the reference variant (AIRMF, affinity
    on, Lite0) copied from it, so variants differ at step 0 only in the part under test."""
    if (dest / "config.yaml").is_file():
        return dest

    def fresh(preset, overrides):
        torch.manual_seed(seed)
        model = build_model(preset, **overrides)
        model.init_encoder_weights()
        return model

    model = fresh(*VARIANTS[name])
    reference = fresh(*VARIANTS["airm-lite0"]).state_dict()
    own = model.state_dict()
    model.load_state_dict({k: reference[k] if k in reference and reference[k].shape == v.shape else v
                           for k, v in own.items()})
    return save_model(model, dest, half=False)


def parameter_counts(name: str) -> dict[str, int]:
    """Parameters per top-level component (encoder, shared, hyper, guide, affinity) and in all."""
    preset, overrides = VARIANTS[name]
    counts: dict[str, int] = {}
    for key, p in build_model(preset, **overrides).named_parameters():
        part = key.split(".")[0]
        counts[part] = counts.get(part, 0) + p.numel()
    counts["total"] = sum(counts.values())
    return counts


def curve(out: Path) -> list[dict]:
    """The run's validation rows, one per validated step (a resumed run's last row per step)."""
    path = out / "val.jsonl"
    if not path.is_file():
        return []
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row["step"]] = row
    return [rows[k] for k in sorted(rows)]


def seconds_per_step(out: Path) -> float:
    """Median training step (forward, backward, Adam) from the run's log, validation excluded."""
    path = out / "log.csv"
    if not path.is_file():
        return float("nan")
    lines = path.read_text().splitlines()[1:]
    secs = [float(line.split(",")[9]) for line in lines if line.count(",") >= 10]
    return statistics.median(secs) if secs else float("nan")


def copy_logs(out: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in SMALL_FILES:
        if (out / name).is_file():
            shutil.copy2(out / name, dest / name)


def cell(scores: dict) -> str:
    return f"{100 * scores['iou']:.2f} / {100 * scores['mba']:.2f}"


def encoder_name(model: dict) -> str:
    return "MiT-b0 (scratch)" if model["encoder"].startswith("pvt") else "EfficientNet-Lite0 (ImageNet)"


def markdown(results: dict, steps: int, val_limit: int) -> str:
    lines = [f"Budget: {steps} steps each (batch 8, 224² crops, same seed, data order and coarse masks); "
             f"network alone on the first {val_limit} DUTS-TR val images; IoU / mBA in percent.", "",
             "| variant | mapping | affinity | encoder | params (M) | perturbed | low-resolution "
             "| s/step | min/run |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    coarse = None
    for name, r in results.items():
        m, final = r["model"], r["curve"][-1]
        if final["step"] != steps:
            continue
        coarse = coarse or [final[mode]["coarse"] for mode in MODES]
        lines.append(f"| {name} | {m['mapping'].upper()}F | {'on' if m['affinity'] else 'off'} | "
                     f"{encoder_name(m)} | {r['params']['total'] / 1e6:.2f} | "
                     + " | ".join(cell(final[mode]["refined"]) for mode in MODES)
                     + f" | {r['sec_per_step']:.2f} | {r['minutes']:.0f} |")
    if coarse:
        lines.append("| *coarse input* | | | | | " + " | ".join(cell(c) for c in coarse) + " | | |")
    lines += ["", "Validation curves (IoU / mBA, perturbed · low-resolution):", "",
              "| variant | " + " | ".join(f"step {row['step']}" for row in
                                         max((r["curve"] for r in results.values()), key=len)) + " |",
              "|---|" + "---:|" * max(len(r["curve"]) for r in results.values())]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(
            " · ".join(cell(row[mode]["refined"]) for mode in MODES) for row in r["curve"]) + " |")
    lines += ["", "Parameters per component:", "",
              "| variant | encoder | shared MLP | hypernetwork | guide | affinity head |",
              "|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        p = r["params"]
        lines.append(f"| {name} | " + " | ".join(f"{p.get(k, 0):,}" for k in
                                                ("encoder", "shared", "hyper", "guide", "affinity")) + " |")
    return "\n".join(lines) + "\n"


def per_image_scores(out: Path, val: Path, limit: int) -> dict:
    """The finished model's network-alone scores per val image and mode (cached in
    ``per_image.json``): what a paired comparison between variants needs, which the
    validation curve's means are not."""
    from napari_airm.data.dataset import ValCases
    from napari_airm.model import load_model
    from napari_airm.training.trainer import score_network

    path = out / "per_image.json"
    if path.is_file():
        return json.loads(path.read_text())
    model = load_model(out / "model").eval()
    scores = {}
    for mode in MODES:
        coarse, refined = score_network(model, ValCases(val, mode=mode, limit=limit))
        scores[mode] = [{"name": c["name"], "coarse_iou": c["iou"], "coarse_mba": c["mba"],
                         "iou": r["iou"], "mba": r["mba"]}
                        for c, r in zip(coarse.per_image, refined.per_image)]
    path.write_text(json.dumps(scores))
    return scores


def paired_difference(a: list[float], b: list[float], seed: int = 0, rounds: int = 2000):
    """Mean of a − b over paired images with a 95 % bootstrap interval (images resampled)."""
    import numpy as np

    d = np.asarray(a) - np.asarray(b)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(rounds, len(d)))].mean(axis=1)
    return float(d.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def verdict(intervals: list[tuple[float, float]]) -> str:
    """docs/performance.md's rule for one claim, written before the numbers, from its 95 %
    intervals (low, high) of Δ IoU and Δ mBA in every mode: "holds" if one lies wholly above 0
    and none wholly below −0.2; "refuted" if one lies wholly below 0 and none above 0; else
    "not separated"."""
    above = any(lo > 0 for lo, _ in intervals)
    if above and not any(hi < -0.2 for _, hi in intervals):
        return "holds"
    if not above and any(hi < 0 for _, hi in intervals):
        return "refuted"
    return "not separated"


def claim_intervals(scores: dict, with_part: str, without: str) -> dict:
    """{mode: {metric: (mean, low, high)}}: paired per-image differences in points."""
    out = {}
    for mode in MODES:
        a, b = scores[with_part][mode], scores[without][mode]
        assert [r["name"] for r in a] == [r["name"] for r in b], "variants scored different images"
        out[mode] = {key: paired_difference([100 * r[key] for r in a], [100 * r[key] for r in b])
                     for key in ("iou", "mba")}
    return out


def claim_verdict(intervals: dict) -> str:
    """``verdict`` over every mode and metric of ``claim_intervals``' result."""
    return verdict([(lo, hi) for mode in intervals.values() for _, lo, hi in mode.values()])


def verdicts(scores: dict) -> dict:
    """{claim: verdict} for every claim whose two variants were scored."""
    found = {}
    for claim, with_part, without in CLAIMS:
        if with_part in scores and without in scores:
            diffs = claim_intervals(scores, with_part, without)
            found[claim] = claim_verdict(diffs)
    return found


def groups_favour_airmf(report: dict, margin: float = 0.5) -> bool | None:
    """The rule's second way to keep the hypernetwork (the paper's Fig. 2(b)): AIRMF's IoU at
    least SIRMF's on every group in both modes, and ahead by ``margin`` points on one group in
    one mode. None when either model was not run."""
    if not {"airm-lite0", "sirm-lite0"} <= set(report):
        return None
    gaps = [100 * (report["airm-lite0"][g][m]["refined"]["iou"] - report["sirm-lite0"][g][m]["refined"]["iou"])
            for g in report["airm-lite0"] for m in MODES]
    return min(gaps) >= 0 and max(gaps) >= margin


def decisions(claims: dict, groups_ok: bool | None) -> list[str]:
    """What the rule says for the bundled model, in words."""
    lines = []
    if "AIRMF over SIRMF" in claims:
        keep = claims["AIRMF over SIRMF"] == "holds" or groups_ok is True
        why = (f"AIRMF over SIRMF {claims['AIRMF over SIRMF']}; Fig. 2(b) "
               + {None: "not run", True: "favours AIRMF", False: "does not favour AIRMF"}[groups_ok])
        lines.append(f"- Hypernetwork: {'keep' if keep else 'next retrain uses SIRMF'} ({why}).")
    if "affinity loss on over off" in claims:
        drop = claims["affinity loss on over off"] == "refuted"
        lines.append(f"- Affinity loss: {'drop' if drop else 'keep'} "
                     f"(claim {claims['affinity loss on over off']}).")
    if "MiT-b0 over Lite0" in claims:
        swap = claims["MiT-b0 over Lite0"] == "holds"
        lines.append(f"- Encoder: {'MiT-b0 replaces Lite0' if swap else 'Lite0 stands'} "
                     f"(MiT-b0 over Lite0 {claims['MiT-b0 over Lite0']}).")
    return lines


def paired_markdown(scores: dict) -> str:
    """Each claim's paired differences per mode: mean per-image IoU and mBA (points, with 95 %
    bootstrap intervals), images that gain or lose more than 0.5 IoU, and the image that loses
    most."""
    lines = ["Paired over the same val images (with part − without), network alone at the final "
             "step; mean per-image IoU and mBA in points with 95 % bootstrap intervals:", "",
             "| claim | mode | Δ IoU [95 %] | Δ mBA [95 %] | images +/− > 0.5 IoU | worst image (Δ IoU) |",
             "|---|---|---:|---:|---:|---|"]
    claims = {}
    for claim, with_part, without in CLAIMS:
        if with_part not in scores or without not in scores:
            continue
        intervals = claim_intervals(scores, with_part, without)
        claims[claim] = claim_verdict(intervals)
        for mode in MODES:
            a, b = scores[with_part][mode], scores[without][mode]
            cells = [f"{mean:+.2f} [{lo:+.2f}, {hi:+.2f}]" for mean, lo, hi in intervals[mode].values()]
            diffs = [(100 * (x["iou"] - y["iou"]), x["name"]) for x, y in zip(a, b)]
            worst = min(diffs)
            lines.append(f"| {claim} | {mode} | {cells[0]} | {cells[1]} | "
                         f"{sum(d > 0.5 for d, _ in diffs)} / {sum(d < -0.5 for d, _ in diffs)} | "
                         f"{worst[1]} ({worst[0]:+.1f}) |")
    if claims:
        lines += ["", "By the rule written before the numbers (docs/performance.md): "
                  + "; ".join(f"{claim} **{found}**" for claim, found in claims.items()) + "."]
    return "\n".join(lines) + "\n"


# The paper's Fig. 2(b) in small: three visually distinct groups of images, one SIRMF trained on
# all three against the AIRMF trained the same way, scored per group. The groups are whole
# domains, so "visually distinct" is not a judgement call: DUTS photos, fluorescence nuclei and
# endoscopy polyps; validation uses DUTS val and the held-out tenth of each extra/ folder.
EXTRA = SHARED / "extra"
GROUPS = {  # group: (training folders, validation folders); (folder, True) = its held-out tenth
    "photos (DUTS-TR)": ([(DATA / "train", False)], [(DATA / "val", False)]),
    "nuclei (DSB 2018)": ([(EXTRA / "dsb2018_nuclei", True)], [(EXTRA / "dsb2018_nuclei", True)]),
    "polyps (Kvasir, CVC)": ([(EXTRA / "kvasir_seg_polyp", True), (EXTRA / "cvc_clinicdb_polyp", True)],
                             [(EXTRA / "kvasir_seg_polyp", True), (EXTRA / "cvc_clinicdb_polyp", True)]),
}


def group_experiment(variants: list[str], base: Path, steps: int, fine_steps: int, val_limit: int,
                     resume: bool) -> dict:
    """Fine-tune each variant's finished ablation model for ``fine_steps`` on an equal mix of the
    three groups (held-out pairs left out), then score the network alone on each group."""
    from napari_airm.data.dataset import ValCases
    from napari_airm.model import load_model
    from napari_airm.training.trainer import score_network

    report = {}
    for name in variants:
        init = base / f"{name}-{steps}" / "model"
        out = base / f"{name}-{steps}-groups{fine_steps}"
        if not (out / "model" / "config.yaml").is_file():
            cfg = variant_config(name, fine_steps, val_limit)
            cfg.val_every = 0
            cfg.warmup_steps = min(100, fine_steps // 10)
            data = [{"root": str(root), "weight": 1 / len(GROUPS) / len(folders), "holdout": heldout}
                    for folders, _ in GROUPS.values() for root, heldout in folders]
            train(cfg, data, out, init=init, resume=resume and has_checkpoint(out / "checkpoint"),
                  progress=False)
        model = load_model(out / "model").eval()
        per_group = {}
        for group, (_, folders) in GROUPS.items():
            per_group[group] = {}
            for mode in MODES:
                sets = [ValCases(root, mode=mode, limit=val_limit, heldout=heldout)
                        for root, heldout in folders]
                coarse, refined = score_network(model, itertools.chain(*sets))
                per_group[group][mode] = {"n": len(coarse.per_image), "coarse": coarse.summary(),
                                          "refined": refined.summary()}
        report[name] = per_group
        (out / "groups.json").write_text(json.dumps(per_group, indent=1))
        print(f"{name} per group: " + json.dumps({g: {m: cell(v[m]["refined"]) for m in MODES}
                                                 for g, v in per_group.items()}), flush=True)
    return report


def groups_markdown(report: dict, fine_steps: int) -> str:
    lines = [f"Each model fine-tuned {fine_steps} more steps on an equal mix of the three groups "
             "(held-out pairs left out), network alone; IoU / mBA, perturbed · low-resolution.", "",
             "| group (val images) | coarse | " + " | ".join(report) + " |",
             "|---|---|" + "---|" * len(report)]
    first = next(iter(report.values()))
    for group, modes in first.items():
        row = [f"{group} ({modes[MODES[0]]['n']})",
               " · ".join(cell(modes[m]["coarse"]) for m in MODES)]
        row += [" · ".join(cell(report[v][group][m]["refined"]) for m in MODES) for v in report]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def time_table(names: list[str], steps: int, val: Path, images: int = 20) -> str:
    """Each variant's cost, timed one after the other in this process: seconds per training step
    and per val image refined by the network alone (encode + hypernetwork + dense decode)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_train_step import time_steps

    from napari_airm.data.dataset import ValCases
    from napari_airm.engine.frame import refine_whole

    cases = list(ValCases(val, mode="perturb", limit=images))
    costs = {}
    for name in names:
        preset, overrides = VARIANTS[name]
        torch.manual_seed(0)
        model = build_model(preset, **overrides)
        step = statistics.mean(time_steps(model, batch=8, size=224, steps=steps, warmup=2, window=112))
        model.eval()
        refine_whole(model, *cases[0][1:3])  # warm-up
        t0 = time.perf_counter()
        for _, image, coarse, _ in cases:
            refine_whole(model, image, coarse)
        costs[name] = (step, (time.perf_counter() - t0) / len(cases))
    base_name = "airm-lite0" if "airm-lite0" in names else names[0]
    base = costs[base_name]
    lines = [f"Cost per variant in one run, {torch.get_num_threads()} threads: training step (forward, "
             f"backward, Adam; batch 8, 224², decode window 112; mean of {steps} after 2 untimed) and "
             f"one DUTS val image refined by the network alone (mean of {len(cases)}):", "",
             f"| variant | s/step | × {base_name} | s/val image | × {base_name} |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {st:.2f} | {st / base[0]:.2f} | {im:.3f} | {im / base[1]:.2f} |"
              for name, (st, im) in costs.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=DEFAULT_VARIANTS,
                   help=f"comma-separated, from {', '.join(VARIANTS)}")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--val-every", type=int, default=1000, help="validation curve spacing (steps)")
    p.add_argument("--val-limit", type=int, default=500)
    p.add_argument("--data", type=Path, default=DATA / "train")
    p.add_argument("--val", type=Path, default=DATA / "val")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "ablation")
    p.add_argument("--resume", action="store_true", help="continue interrupted variants")
    p.add_argument("--logs", type=Path, help="copy each variant's small files here (per variant)")
    p.add_argument("--markdown", type=Path, help="also write the tables here")
    p.add_argument("--time-steps", type=int, default=0, metavar="N",
                   help="only time each variant in one run (N training steps, 20 val images), then exit")
    p.add_argument("--groups", type=int, default=0, metavar="STEPS",
                   help="afterwards, the Fig. 2(b) experiment: fine-tune AIRMF and SIRMF this many "
                        "steps on three groups and score each group (0: skip)")
    args = p.parse_args(argv)

    # a session's end sends SIGTERM: exit through the finally blocks so the wall time is kept
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    names = args.variants.split(",")
    for name in names:
        if name not in VARIANTS:
            p.error(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    if args.time_steps:
        print(time_table(names, args.time_steps, args.val))
        return 0
    results, scores = {}, {}
    for name in names:
        out = args.out / f"{name}-{args.steps}"
        cfg = variant_config(name, args.steps, args.val_limit, args.val_every)
        rows = curve(out)
        if not rows or rows[-1]["step"] != args.steps:
            t0 = time.perf_counter()
            before = float((out / "minutes.txt").read_text()) if (out / "minutes.txt").is_file() else 0.0

            def record_minutes():
                out.mkdir(parents=True, exist_ok=True)
                (out / "minutes.txt").write_text(f"{before + (time.perf_counter() - t0) / 60:.2f}\n")

            def every_10_steps(step, *_):  # a session's end may kill the run without a signal
                if step % 10 == 0:
                    record_minutes()

            try:
                init = start_model(name, cfg.seed, out / "init")
                train(cfg, args.data, out, val=args.val, init=init,
                      resume=args.resume and has_checkpoint(out / "checkpoint"), progress=False,
                      on_step=every_10_steps)
            finally:  # a killed or interrupted run still records the wall time it spent
                record_minutes()
            rows = curve(out)
        minutes = float((out / "minutes.txt").read_text()) if (out / "minutes.txt").is_file() else float("nan")
        results[name] = {"model": cfg.model, "curve": rows, "minutes": minutes,
                         "sec_per_step": seconds_per_step(out), "params": parameter_counts(name)}
        scores[name] = per_image_scores(out, args.val, args.val_limit)
        if args.logs:
            copy_logs(out, args.logs / name)
        print(f"{name}: " + json.dumps({m: cell(rows[-1][m]["refined"]) for m in MODES}), flush=True)
    table = markdown(results, args.steps, args.val_limit)
    table += "\n" + paired_markdown(scores)
    groups_ok = None
    if args.groups:
        pair = [n for n in ("airm-lite0", "sirm-lite0") if n in names]
        report = group_experiment(pair, args.out, args.steps, args.groups, args.val_limit, args.resume)
        table += "\n" + groups_markdown(report, args.groups)
        groups_ok = groups_favour_airmf(report)
        if args.logs:
            for name in pair:
                copy_logs(args.out / f"{name}-{args.steps}-groups{args.groups}", args.logs / f"{name}-groups")
    table += "\nWhat follows for the bundled model:\n\n" + "\n".join(decisions(verdicts(scores), groups_ok)) + "\n"
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
        (args.logs / "summary.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
