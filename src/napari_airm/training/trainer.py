"""The training loop: config in, model folder out; resumable, logged, validated."""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from ..data import DataError, TrainCrops, ValCases, check_pairs
from ..data.perturb import MODES
from ..losses import LossWeights
from ..metrics import SegmentationScores
from ..model import AIRM, build_model, load_model, save_model
from ..model.registry import model_config
from .checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .step import training_forward


class TrainingCancelled(Exception):
    """Raised inside the loop when ``should_stop`` says so; the last checkpoint stays valid."""


class StepBatches(torch.utils.data.Sampler):
    """Batch indices as a pure function of (seed, step): resuming at step s replays nothing.

    Indices are ``epoch * n + i`` (see ``TrainCrops``): image ``i`` gets a new crop and coarse
    mask every epoch instead of repeating epoch 0's.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int, max_steps: int):
        self.n, self.bs, self.seed, self.start, self.stop = n, batch_size, seed, start_step, max_steps
        self.per_epoch = max(1, n // batch_size)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self):
        perm, perm_epoch = None, -1
        for step in range(self.start, self.stop):
            epoch, k = divmod(step, self.per_epoch)
            if epoch != perm_epoch:
                g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                perm, perm_epoch = torch.randperm(self.n, generator=g), epoch
            yield [epoch * self.n + i for i in perm[k * self.bs:(k + 1) * self.bs].tolist()]


class MixedStepBatches(torch.utils.data.Sampler):
    """Batches drawn from several groups of images (``TrainCrops.groups``) with ``weights``,
    as a pure function of (seed, step) like ``StepBatches``.

    Each slot of step s picks its group from a generator seeded with (seed, s); within a group
    the k-th draw takes image ``perm_e[k mod n]`` of that group's permutation for its epoch
    e = k // n, so every image of a group is used once per epoch of the group. Resuming at a
    step replays the group choices before it (a fraction of a second for 45k steps) and
    continues exactly.
    """

    def __init__(self, groups, weights, batch_size: int, seed: int, start_step: int, max_steps: int):
        self.groups = [range(g.start, g.stop) for g in groups]
        if any(len(g) == 0 for g in self.groups):
            raise ValueError("every training folder needs at least one pair")
        self.p = np.asarray(weights, float) / np.sum(weights)
        self.n = sum(len(g) for g in self.groups)
        self.bs, self.seed, self.start, self.stop = batch_size, seed, start_step, max_steps

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def choices(self, step: int) -> np.ndarray:
        """The group of each slot of ``step``."""
        rng = np.random.default_rng([self.seed, 7_368_787, step])
        return rng.choice(len(self.groups), size=self.bs, p=self.p)

    def _perm(self, group: int, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 131 + group)
        return torch.randperm(len(self.groups[group]), generator=g).tolist()

    def __iter__(self):
        counts = np.zeros(len(self.groups), np.int64)
        for step in range(self.start):
            counts += np.bincount(self.choices(step), minlength=len(self.groups))
        perms: dict[tuple[int, int], list[int]] = {}
        for step in range(self.start, self.stop):
            batch = []
            for group in self.choices(step).tolist():
                size = len(self.groups[group])
                epoch, k = divmod(int(counts[group]), size)
                counts[group] += 1
                if (group, epoch) not in perms:
                    perms = {key: v for key, v in perms.items() if key[0] != group}
                    perms[(group, epoch)] = self._perm(group, epoch)
                batch.append(epoch * self.n + self.groups[group].start + perms[(group, epoch)][k])
            yield batch


@dataclass
class TrainResult:
    out_dir: Path
    model_dir: Path
    steps: int
    last_val: dict | None


def start_from(init_model: AIRM, requested) -> AIRM:
    """The network a fine-tune starts from: the init model's architecture, except that the
    config may *grow* it by guide blocks (same config but a larger ``guide_blocks``). The
    new blocks' residual branches start at zero, so the grown model starts as the init model.
    """
    try:
        wanted = model_config(requested).to_dict()
    except (ValueError, TypeError):
        return init_model
    have = init_model.cfg.to_dict()
    rest = lambda cfg: {k: v for k, v in cfg.items() if k not in ("guide_blocks", "encoder_init")}  # noqa: E731
    if rest(wanted) != rest(have) or wanted["guide_blocks"] <= have["guide_blocks"]:
        return init_model
    grown = build_model({**have, "guide_blocks": wanted["guide_blocks"]})
    missing, unexpected = grown.load_state_dict(init_model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("guide.blocks.") for k in missing), (missing, unexpected)
    print(f"fine-tuning {init_model.cfg.encoder} grown from {have['guide_blocks']} to "
          f"{wanted['guide_blocks']} guide blocks ({len(missing)} new tensors start fresh)", flush=True)
    return grown


def score_network(model: AIRM, cases, device=None):
    """Scores of the coarse masks and of the network alone (``refine_whole``, no trust region
    or boundary solve) over ``(name, image, coarse, gt)`` cases: (coarse, refined)."""
    from ..engine.frame import refine_whole  # engine imports the model; keep the import local

    coarse_s, refined_s = SegmentationScores(), SegmentationScores()
    for name, image, coarse, gt in cases:
        coarse_s.add(coarse, gt, name)
        refined_s.add(refine_whole(model, image, coarse, device=device) > 0.5, gt, name)
    return coarse_s, refined_s


def validate(model: AIRM, val_root: str | Path, modes, limit: int | None, device) -> dict:
    """IoU/mBA of coarse vs refined masks on fixed validation cases, per coarse-mask mode."""
    was_training = model.training
    model.eval()
    report = {}
    for mode in modes:
        cases = ValCases(val_root, mode=mode, limit=limit)
        coarse_s, refined_s = score_network(model, cases, device)
        report[mode] = {"coarse": coarse_s.summary(), "refined": refined_s.summary()}
    model.train(was_training)
    return report


def train(config: TrainConfig | str | Path, data, out: str | Path, *,
          val: str | Path | None = None, resume: bool = False, init: str | Path | None = None,
          max_steps: int | None = None, device: str | None = None, progress: bool = True,
          should_stop: Callable[[], bool] | None = None,
          on_step: Callable[[int, int, dict], None] | None = None) -> TrainResult:
    """Train (or fine-tune with ``init``) and write ``out/model`` (config + safetensors).

    ``data`` is one training folder or a list of them (paths, ``"DIR=WEIGHT"`` or
    ``{root, weight, holdout}``, see ``data.DataSource``); ``None`` takes the config's ``data``.
    Every training and validation file is decoded before the first step (``check_data``).
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.load(config)
    if max_steps is not None:
        cfg.max_steps = int(max_steps)
    out = Path(out)
    ckpt_dir = out / "checkpoint"
    if not resume and has_checkpoint(ckpt_dir):
        raise FileExistsError(f"{out} already holds a training run; use --resume to continue it "
                              f"or choose another --out")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg.seed)

    sources = cfg.sources(data)
    cfg.data = [{"root": str(s.root), "weight": s.weight, "holdout": s.holdout} for s in sources]
    dataset = TrainCrops(sources, crop=cfg.crop, coarse_mode=cfg.coarse_mode,
                         scale_range=tuple(cfg.scale_range), seed=cfg.seed,
                         lowres_share=cfg.lowres_share, identity_share=cfg.identity_share)
    _check_data(dataset, val, cfg, progress)
    if init is not None:
        model = start_from(load_model(init), cfg.model)
        cfg.model = model.cfg.to_dict()
    else:
        model = build_model(cfg.model)
        model.init_encoder_weights()
    model.to(device).train()
    if device.type == "cpu":  # oneDNN: 10-14 % faster steps, the same network up to rounding
        model.use_channels_last()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    start = 0
    if resume:
        if not has_checkpoint(ckpt_dir):
            raise FileNotFoundError(f"--resume: no checkpoint in {ckpt_dir}")
        start = load_checkpoint(ckpt_dir, model, optimizer)["step"]
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "train_config.yaml")

    weights = LossWeights(**cfg.loss)
    if len(dataset.groups) == 1:
        sampler = StepBatches(len(dataset), cfg.batch_size, cfg.seed, start, cfg.max_steps)
    else:
        sampler = MixedStepBatches(dataset.groups, dataset.weights, cfg.batch_size, cfg.seed, start,
                                   cfg.max_steps)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.workers,
                                         persistent_workers=False)
    log_path = out / "log.csv"
    _truncate_log(log_path, start)
    val_path = out / "val.jsonl"
    records = _truncate_val(val_path, start)
    last_val = records[-1] if records else None

    def run_validation(at: int) -> dict:
        report = {"step": at, **validate(model, val, cfg.val_modes, cfg.val_limit, device)}
        with open(val_path, "a") as f:
            f.write(json.dumps(report) + "\n")
        save_model(model, out / f"model-step{at}", train_config=cfg.to_dict(),
                   metadata={"steps": at, "val": report})
        return report

    def is_val_step(at: int) -> bool:
        return bool(val is not None and cfg.val_every and (at % cfg.val_every == 0 or at == cfg.max_steps))

    if start > 0 and is_val_step(start) and (last_val is None or last_val["step"] != start):
        # the run was stopped during this step's validation (e.g. killed in the final one):
        # do it now, so a resumed run never ends with a missing validation
        print(f"step {start}: its validation did not finish before the run stopped; running it now",
              flush=True)
        last_val = run_validation(start)
        print(_format_val(last_val), flush=True)
    elif start > 0 and last_val is not None and last_val["step"] == start \
            and not (out / f"model-step{start}" / "config.yaml").is_file():  # killed before the snapshot
        save_model(model, out / f"model-step{start}", train_config=cfg.to_dict(),
                   metadata={"steps": start, "val": last_val})

    log_file = open(log_path, "a", newline="")
    log = csv.writer(log_file)
    if log_path.stat().st_size == 0:
        log.writerow(["step", "lr", "total", "airmf", "l1", "l2", "bce", "grad", "aff", "sec_per_step",
                      "data_sec"])
    bad_steps = 0
    step = start
    bar = tqdm(total=cfg.max_steps, initial=start, disable=not progress, desc="train", unit="step")
    t_data = time.perf_counter()
    try:
        for batch in loader:
            data_sec = time.perf_counter() - t_data
            if should_stop is not None and should_stop():
                raise TrainingCancelled(f"stopped at step {step}")
            t0 = time.perf_counter()
            rgb, coarse, gt = (t.to(device, non_blocking=True) for t in batch)
            lr = cfg.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            gen = torch.Generator().manual_seed(cfg.seed * 7919 + step)
            lo, hi = cfg.encode_scale_range
            scale = lo + (hi - lo) * torch.rand(1, generator=gen).item()
            loss, parts = training_forward(model, rgb, coarse, gt, encode_scale=scale, window=cfg.window,
                                           boundary_share=cfg.boundary_share, weights=weights,
                                           generator=gen)
            optimizer.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                bad_steps += 1
                if bad_steps > cfg.max_bad_steps:
                    raise FloatingPointError(f"loss was not finite for {bad_steps} steps in a row "
                                             f"(last at step {step}); lower the learning rate")
            else:
                bad_steps = 0
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
            step += 1
            sec = time.perf_counter() - t0
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                log.writerow([step, f"{lr:.3g}"] + [f"{parts.get(k, torch.tensor(math.nan)).item():.5f}"
                             for k in ("total", "airmf", "l1", "l2", "bce", "grad", "aff")]
                             + [f"{sec:.3f}", f"{data_sec:.3f}"])
                log_file.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{parts['total'].item():.4f}")
            if on_step is not None:
                on_step(step, cfg.max_steps, {k: v.item() for k, v in parts.items()})
            if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
                save_checkpoint(ckpt_dir, model, optimizer, step)
            if is_val_step(step):
                last_val = run_validation(step)
                bar.write(_format_val(last_val))
            t_data = time.perf_counter()
    finally:
        bar.close()
        log_file.close()
    metadata = {"steps": step, "val": last_val}
    if last_val is None:
        why = ("no validation folder was given" if val is None else
               "val_every is 0" if not cfg.val_every else "no validation step was reached")
        metadata["val_note"] = why
        print(f"note: the model has no validation result ({why})", flush=True)
    model_dir = save_model(model.eval(), out / "model", train_config=cfg.to_dict(), metadata=metadata)
    return TrainResult(out, model_dir, step, last_val)


def _check_data(dataset: TrainCrops, val, cfg: TrainConfig, progress: bool) -> None:
    """Everything the run will read, checked before its first step (one clear error)."""
    bad_modes = [m for m in cfg.val_modes if m not in MODES]
    if bad_modes:
        raise ValueError(f"training config: unknown val_modes {bad_modes}; use {list(MODES)}")
    if cfg.coarse_mode not in MODES:
        raise ValueError(f"training config: unknown coarse_mode {cfg.coarse_mode!r}; use {list(MODES)}")
    val_pairs = []
    if val is not None and cfg.val_every:
        try:
            val_pairs = ValCases(val, limit=cfg.val_limit).pairs
        except DataError as exc:
            raise DataError(f"validation folder unusable: {exc}") from None
    t0 = time.perf_counter()
    if cfg.check_data:
        check_pairs(dataset.pairs, "training")
        if val_pairs:
            check_pairs(val_pairs, "validation")
    if progress or len(dataset.sources) > 1:
        parts = [f"{s.root}: {len(g)} pairs" + (" (held-out tenth left out)" if s.holdout else "")
                 + (f", {100 * w:.0f} % of samples" if len(dataset.sources) > 1 else "")
                 for s, g, w in zip(dataset.sources, dataset.groups, dataset.weights)]
        checked = (f"every file decoded in {time.perf_counter() - t0:.0f} s" if cfg.check_data
                   else "files not decoded in advance (check_data: false)")
        print(f"training data: {'; '.join(parts)}; {len(val_pairs)} validation pairs; {checked}",
              flush=True)


def _truncate_val(path: Path, step: int) -> list[dict]:
    """Validation records up to ``step`` (a resumed run replays and revalidates later steps)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            records.append(record)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def _truncate_log(path: Path, step: int) -> None:
    """A resumed run replays the steps after its checkpoint: drop their old log rows."""
    if not path.is_file():
        return
    rows = path.read_text().splitlines()
    keep = [r for r in rows[1:] if r and int(r.split(",", 1)[0]) <= step]
    path.write_text("\n".join(rows[:1] + keep) + "\n" if rows else "")


def _format_val(report: dict) -> str:
    parts = [f"step {report['step']}"]
    for mode, r in report.items():
        if mode == "step":
            continue
        c, f = r["coarse"], r["refined"]
        parts.append(f"{mode}: IoU {100*c['iou']:.2f}->{100*f['iou']:.2f} "
                     f"mBA {100*c['mba']:.2f}->{100*f['mba']:.2f}")
    return " | ".join(parts)
