"""Training configuration: one YAML file, every number of the recipe in it.

Defaults are the paper's recipe (Adam, lr 2.25e-5, ×0.1 at 22.5k and 37.5k of 45k steps,
224² crops, loss weights of eq. 7/11); the bundled CPU model's config shortens the schedule.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice (PyYAML would silently keep the last)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen = set()
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}",
                                                    key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


@dataclass
class TrainConfig:
    model: Any = "airm-b0"  # preset name or a dict of AIRMConfig fields
    seed: int = 0
    # data
    # training folders: paths, "DIR=WEIGHT", or {root, weight, holdout}; weight = share of the
    # samples (normalised), holdout: true = leave out the pairs data.is_heldout picks (for sets
    # without a validation folder). The CLI's --data (train()'s data) replaces this list;
    # relative roots are relative to the working directory.
    data: list[Any] = field(default_factory=list)
    check_data: bool = True  # decode every training/validation file before the first step
    crop: int = 224
    coarse_mode: str = "mixed"  # perturb | lowres | mixed
    lowres_share: float = 0.25  # share of low-resolution coarse masks in "mixed"
    # share of near-identity coarse masks (GT itself, 1-2 px boundary noise, x2-x4 down-up) in
    # any mode; 0 keeps a recipe's masks exactly as they were before this option existed
    identity_share: float = 0.0
    scale_range: list[float] = field(default_factory=lambda: [0.75, 1.25])
    workers: int = 1
    # optimisation
    batch_size: int = 8
    lr: float = 2.25e-5
    milestones: list[int] = field(default_factory=lambda: [22500, 37500])
    gamma: float = 0.1
    warmup_steps: int = 0
    max_steps: int = 45000
    grad_clip: float = 1.0
    max_bad_steps: int = 20  # consecutive non-finite losses before giving up
    # resolution independence and decoding
    encode_scale_range: list[float] = field(default_factory=lambda: [0.5, 1.0])
    window: int | None = 112
    boundary_share: float = 0.75
    # loss weights (paper eq. 7 and 11)
    loss: dict[str, float] = field(default_factory=lambda: {
        "l1": 0.2, "l2": 0.2, "bce": 0.3, "grad": 0.4, "airmf": 0.5, "aff": 0.5})
    # bookkeeping
    log_every: int = 10
    checkpoint_every: int = 200
    val_every: int = 1000
    val_limit: int | None = 100
    val_modes: list[str] = field(default_factory=lambda: ["perturb", "lowres"])

    def __post_init__(self):
        for name in ("lowres_share", "identity_share"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"training config: {name} must be a number in [0, 1], got {value!r}")
        if not isinstance(self.data, list):
            self.data = [self.data]

    def sources(self, data=None):
        """The training folders as ``DataSource``s: ``data`` (one spec or a list) if given,
        else the config's ``data`` list."""
        from ..data import DataSource

        specs = data if data is not None else self.data
        specs = list(specs) if isinstance(specs, (list, tuple)) else [specs]
        if not specs:
            raise ValueError("no training data: give --data DIR (or a 'data:' list in the config)")
        return [DataSource.parse(s) for s in specs]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown training config keys: {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        try:
            data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read training config {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"training config {path} must be a mapping of keys to values")
        # a model folder's config.yaml: architecture under 'model', recipe under 'train'
        if isinstance(data.get("train"), dict):
            data = {**data["train"], **({"model": data["model"]} if "model" in data else {})}
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def lr_at(self, step: int) -> float:
        lr = self.lr * self.gamma ** sum(step >= m for m in self.milestones)
        if self.warmup_steps and step < self.warmup_steps:
            lr *= (step + 1) / self.warmup_steps
        return lr
