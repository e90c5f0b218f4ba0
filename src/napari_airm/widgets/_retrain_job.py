"""The Retrain widget's worker: export the pairs, fine-tune, then score the base and the new
model on the same crops, so the user decides with numbers whether Refine should use it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ._export import export_pairs

CHECK_MODE = "perturb"  # coarse masks for the before/after check: the trainer's perturbed kind
CHECK_LIMIT = 20  # crops scored per model (seconds on a CPU at the default crop size)


@dataclass
class RetrainRequest:
    pairs: list  # (name, image level-0 array, labels level-0 array)
    base_model: Path
    run_dir: Path
    steps: int = 200
    crop: int = 224
    batch_size: int = 4
    lr: float = 1e-4
    device: str | None = None


@dataclass
class RetrainResult:
    train: Any  # training.TrainResult
    check: dict  # {"base": scores, "new": scores, "crops": n}; scores: iou, mba (fractions)


def finetune_config(base_model: Path, req: RetrainRequest):
    """The base model's recipe (when its folder records one), shortened for a quick fine-tune."""
    import yaml

    from ..training import TrainConfig

    data = yaml.safe_load((Path(base_model) / "config.yaml").read_text()) or {}
    recipe = dict(data.get("train") or {})
    recipe["model"] = data.get("model", recipe.get("model", "airm-b0"))
    cfg = TrainConfig.from_dict(recipe)
    cfg.max_steps, cfg.crop, cfg.batch_size, cfg.lr = req.steps, req.crop, req.batch_size, req.lr
    cfg.warmup_steps, cfg.milestones = 0, []
    cfg.workers = 0  # no worker processes inside the napari process
    cfg.checkpoint_every, cfg.val_every = req.steps, 0
    cfg.log_every = max(1, min(cfg.log_every, req.steps // 10 or 1))
    return cfg


def score_models(base_model: Path, new_model: Path, data: Path, device: str | None) -> dict:
    """IoU/mBA of both models on the exported crops with seeded perturbed coarse masks. These
    crops are the training data (nothing is held out): the check shows whether the fine-tune
    learnt the corrections and did not break the model, not how it generalises."""
    from .. import api
    from ..model import load_model
    from ..training.trainer import validate

    dev = api.resolve_device(device)
    scores = {}
    for key, folder in (("base", base_model), ("new", new_model)):
        report = validate(load_model(folder, device=dev), data, [CHECK_MODE], CHECK_LIMIT, dev)
        scores[key] = report[CHECK_MODE]["refined"]
        scores["coarse"] = report[CHECK_MODE]["coarse"]
    scores["crops"] = scores["new"]["images"]
    return scores


def run_retrain(req: RetrainRequest, report: Callable = lambda d, t, i=None: None,
                cancelled: Callable[[], bool] = lambda: False) -> RetrainResult:
    """The worker: export the pairs, ``api.train`` from the base model, then ``score_models``."""
    from .. import api

    data = req.run_dir / "data"
    names = export_pairs(req.pairs, data, report=report, cancelled=cancelled)
    report(0, req.steps, f"training on {len(names)} crops")
    result = api.train(finetune_config(req.base_model, req), data, req.run_dir / "train",
                       init=req.base_model, device=req.device, progress=False, should_stop=cancelled,
                       on_step=lambda s, t, parts: report(s, t, parts))
    report(0, 0, f"scoring the base and the new model on {min(len(names), CHECK_LIMIT)} crops…")
    return RetrainResult(result, score_models(req.base_model, result.model_dir, data, req.device))


def check_text(check: dict) -> str:
    """'IoU 93.10 → 93.40, mBA 70.20 → 71.00 on 4 training crops (coarse: …)' in %."""
    base, new, coarse = check["base"], check["new"], check["coarse"]
    return (f"on {check['crops']} training crops (not held out), base → new: "
            f"IoU {100 * base['iou']:.2f} → {100 * new['iou']:.2f}, "
            f"mBA {100 * base['mba']:.2f} → {100 * new['mba']:.2f} "
            f"(coarse masks: IoU {100 * coarse['iou']:.2f}, mBA {100 * coarse['mba']:.2f})")
