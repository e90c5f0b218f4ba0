"""The training loop: config in, model folder out; resumable, logged, validated."""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from ..data import TrainCrops, ValCases
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


def validate(model: AIRM, val_root: str | Path, modes, limit: int | None, device) -> dict:
    """IoU/mBA of coarse vs refined masks on fixed validation cases, per coarse-mask mode."""
    from ..engine.frame import refine_whole  # engine imports the model; keep the import local

    was_training = model.training
    model.eval()
    report = {}
    for mode in modes:
        cases = ValCases(val_root, mode=mode, limit=limit)
        coarse_s, refined_s = SegmentationScores(), SegmentationScores()
        for i in range(len(cases)):
            name, image, coarse, gt = cases[i]
            coarse_s.add(coarse, gt, name)
            refined_s.add(refine_whole(model, image, coarse, device=device) > 0.5, gt, name)
        report[mode] = {"coarse": coarse_s.summary(), "refined": refined_s.summary()}
    model.train(was_training)
    return report


def train(config: TrainConfig | str | Path, data: str | Path, out: str | Path, *,
          val: str | Path | None = None, resume: bool = False, init: str | Path | None = None,
          max_steps: int | None = None, device: str | None = None, progress: bool = True,
          should_stop: Callable[[], bool] | None = None,
          on_step: Callable[[int, int, dict], None] | None = None) -> TrainResult:
    """Train (or fine-tune with ``init``) and write ``out/model`` (config + safetensors)."""
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

    dataset = TrainCrops(data, crop=cfg.crop, coarse_mode=cfg.coarse_mode,
                         scale_range=tuple(cfg.scale_range), seed=cfg.seed,
                         lowres_share=cfg.lowres_share)
    if init is not None:
        model = start_from(load_model(init), cfg.model)
        cfg.model = model.cfg.to_dict()
    else:
        model = build_model(cfg.model)
        model.init_encoder_weights()
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    start = 0
    if resume:
        if not has_checkpoint(ckpt_dir):
            raise FileNotFoundError(f"--resume: no checkpoint in {ckpt_dir}")
        start = load_checkpoint(ckpt_dir, model, optimizer)["step"]
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "train_config.yaml")

    weights = LossWeights(**cfg.loss)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=StepBatches(len(dataset), cfg.batch_size, cfg.seed, start, cfg.max_steps),
        num_workers=cfg.workers, persistent_workers=False)
    log_path = out / "log.csv"
    _truncate_log(log_path, start)
    log_file = open(log_path, "a", newline="")
    log = csv.writer(log_file)
    if log_path.stat().st_size == 0:
        log.writerow(["step", "lr", "total", "airmf", "l1", "l2", "bce", "grad", "aff", "sec_per_step",
                      "data_sec"])
    last_val = None
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
            if val is not None and cfg.val_every and (step % cfg.val_every == 0 or step == cfg.max_steps):
                last_val = {"step": step, **validate(model, val, cfg.val_modes, cfg.val_limit, device)}
                with open(out / "val.jsonl", "a") as f:
                    f.write(json.dumps(last_val) + "\n")
                save_model(model, out / f"model-step{step}", train_config=cfg.to_dict(),
                           metadata={"steps": step, "val": last_val})
                bar.write(_format_val(last_val))
            t_data = time.perf_counter()
    finally:
        bar.close()
        log_file.close()
    model_dir = save_model(model.eval(), out / "model", train_config=cfg.to_dict(),
                           metadata={"steps": step, "val": last_val})
    return TrainResult(out, model_dir, step, last_val)


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
