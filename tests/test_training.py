"""The training loop on a tiny generated dataset: resume is exact, runs are protected, NaN guard,
cancellation, fine-tuning from a model folder."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from napari_airm.model import build_model, load_model, save_model
from napari_airm.training import TrainConfig, TrainingCancelled, train
from napari_airm.training import trainer as trainer_module
from napari_airm.training.checkpoint import has_checkpoint, load_checkpoint
from napari_airm.training.trainer import StepBatches


def tiny_config(**overrides) -> TrainConfig:
    cfg = dict(model="airm-b0", crop=64, batch_size=2, workers=0, lr=1e-3, max_steps=4,
               milestones=[3], log_every=1, checkpoint_every=2, val_every=0, window=32,
               coarse_mode="perturb")
    cfg.update(overrides)
    return TrainConfig(**cfg)


def run(data, out, **kwargs):
    cfg_over = {k: kwargs.pop(k) for k in list(kwargs) if k in TrainConfig.__dataclass_fields__}
    return train(tiny_config(**cfg_over), data, out, progress=False, device="cpu", **kwargs)


def checkpoint_tensors(out):
    return load_file(str(out / "checkpoint" / "state.safetensors"))


def log_steps(out):
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    return [int(r["step"]) for r in rows], rows


# --------------------------------------------------------------------------------------------
def test_resume_continues_exactly(disc_dataset, tmp_path):
    straight = run(disc_dataset, tmp_path / "straight")
    assert straight.steps == 4
    run(disc_dataset, tmp_path / "split", max_steps=2)
    assert load_checkpoint(tmp_path / "split" / "checkpoint", build_model("airm-b0"), None)["step"] == 2
    resumed = run(disc_dataset, tmp_path / "split", resume=True)
    assert resumed.steps == 4

    a, b = checkpoint_tensors(tmp_path / "straight"), checkpoint_tensors(tmp_path / "split")
    assert a.keys() == b.keys()
    assert any(k.startswith("opt/") for k in a)  # Adam moments are part of the checkpoint
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=0, msg=key)
    # training moved the weights (the comparison above is not between two untouched models)
    init = build_model("airm-b0").state_dict()
    moved = [k for k in init if init[k].is_floating_point() and not torch.equal(a["model/" + k], init[k])]
    assert len(moved) > len(init) // 2

    steps, rows = log_steps(tmp_path / "split")
    assert steps == [1, 2, 3, 4]  # one header, rows from both sessions
    assert all(math.isfinite(float(r["total"])) for r in rows)
    assert float(rows[0]["lr"]) == pytest.approx(1e-3) and float(rows[3]["lr"]) == pytest.approx(1e-4)
    assert log_steps(tmp_path / "straight")[0] == [1, 2, 3, 4]

    # the final model folder loads and equals the checkpoint (up to float16 storage)
    model = load_model(resumed.model_dir)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, a["model/" + k].to(v.dtype), atol=2e-3, rtol=2e-3, msg=k)
    assert (tmp_path / "split" / "train_config.yaml").is_file()


def test_training_into_an_existing_run_needs_resume(disc_dataset, tmp_path):
    run(disc_dataset, tmp_path / "out", max_steps=2)
    with pytest.raises(FileExistsError, match="already holds a training run.*--resume"):
        run(disc_dataset, tmp_path / "out", max_steps=2)
    assert log_steps(tmp_path / "out")[0] == [1, 2]  # the first run's log is untouched


def test_resume_without_checkpoint_is_an_error(disc_dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run(disc_dataset, tmp_path / "empty", resume=True)


def test_init_from_a_model_folder(disc_dataset, tmp_path):
    torch.manual_seed(123)
    start = build_model("sirm-b0")
    folder = save_model(start, tmp_path / "start", half=False)
    # lr 0: the weights stay the loaded ones, so the output shows where training started
    result = run(disc_dataset, tmp_path / "ft", init=folder, max_steps=2, lr=0.0,
                 model="airm-b0")
    tuned = load_model(result.model_dir)
    assert tuned.cfg == start.cfg  # the architecture comes from the model folder
    assert tuned.hyper is None
    for (k, v), p in zip(start.named_parameters(), tuned.parameters()):
        torch.testing.assert_close(p, v.detach().half().float(), atol=0, rtol=0, msg=k)
    saved_cfg = TrainConfig.load(tmp_path / "ft" / "train_config.yaml")
    assert saved_cfg.model["mapping"] == "sirm"


def test_init_can_grow_the_guide(disc_dataset, tmp_path):
    torch.manual_seed(5)
    start = build_model("airm-b0")
    folder = save_model(start, tmp_path / "start", half=False)
    result = run(disc_dataset, tmp_path / "ft", init=folder, max_steps=2, lr=0.0,
                 model={**start.cfg.to_dict(), "guide_blocks": 1})
    tuned = load_model(result.model_dir)
    assert tuned.cfg.guide_blocks == 1 and len(tuned.guide.blocks) == 1
    own = dict(tuned.named_parameters())
    for k, v in start.named_parameters():  # the old weights came along unchanged (lr 0)
        torch.testing.assert_close(own[k], v.detach().half().float(), atol=0, rtol=0, msg=k)


def test_nan_guard_gives_up_after_max_bad_steps(disc_dataset, tmp_path, monkeypatch):
    calls = []

    def nan_forward(model, *args, **kwargs):
        calls.append(1)
        nan = torch.tensor(math.nan)
        return nan, {"total": nan, "airmf": nan}

    monkeypatch.setattr(trainer_module, "training_forward", nan_forward)
    with pytest.raises(FloatingPointError, match="not finite for 3 steps in a row"):
        run(disc_dataset, tmp_path / "out", max_steps=50, max_bad_steps=2)
    assert len(calls) == 3  # max_bad_steps bad steps are tolerated, one more is not


def test_nan_guard_counts_consecutive_steps_only(disc_dataset, tmp_path, monkeypatch):
    real = trainer_module.training_forward
    calls = []

    def sometimes_nan(model, *args, **kwargs):
        calls.append(1)
        loss, parts = real(model, *args, **kwargs)
        if len(calls) % 3:  # nan, nan, ok, nan, nan, ok
            return loss * math.nan, parts
        return loss, parts

    monkeypatch.setattr(trainer_module, "training_forward", sometimes_nan)
    before = build_model("airm-b0").state_dict()
    result = run(disc_dataset, tmp_path / "out", max_steps=6, max_bad_steps=2)
    assert result.steps == 6 and len(calls) == 6
    after = checkpoint_tensors(tmp_path / "out")
    # the bad steps did not poison the weights
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert any(not torch.equal(after["model/" + k], v) for k, v in before.items())


def test_should_stop_cancels_and_leaves_a_loadable_checkpoint(disc_dataset, tmp_path):
    asked = []

    def should_stop():
        asked.append(1)
        return len(asked) > 3  # stop before the 4th step

    seen = []
    with pytest.raises(TrainingCancelled, match="stopped at step 3"):
        run(disc_dataset, tmp_path / "out", max_steps=10, should_stop=should_stop,
            on_step=lambda step, total, parts: seen.append((step, total)))
    assert seen == [(1, 10), (2, 10), (3, 10)]
    ckpt = tmp_path / "out" / "checkpoint"
    assert has_checkpoint(ckpt)
    assert not list(ckpt.glob("*.part"))
    assert load_checkpoint(ckpt, build_model("airm-b0"), None)["step"] == 2  # checkpoint_every=2
    # and the run continues from it
    result = run(disc_dataset, tmp_path / "out", max_steps=4, resume=True)
    assert result.steps == 4
    # step 3 ran twice (its first run was lost with the stop): the log keeps the replay only
    assert log_steps(tmp_path / "out")[0] == [1, 2, 3, 4]


def test_step_batches_cover_every_image_once_per_epoch():
    sampler = StepBatches(n=6, batch_size=2, seed=0, start_step=0, max_steps=6)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 6 and all(len(b) == 2 for b in batches)
    epoch0 = sorted(i for b in batches[:3] for i in b)
    epoch1 = sorted(i for b in batches[3:] for i in b)
    assert epoch0 == [0, 1, 2, 3, 4, 5]
    assert epoch1 == [6, 7, 8, 9, 10, 11]  # image i in epoch 1 is index 6 + i
    # resuming at step 4 replays exactly the remaining batches
    assert list(StepBatches(6, 2, 0, 4, 6)) == batches[4:]


def test_bad_training_config_is_named(tmp_path):
    (tmp_path / "c.yaml").write_text("model: airm-b0\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"unknown training config keys: \['learning_rate'\]"):
        TrainConfig.load(tmp_path / "c.yaml")
    cfg = tiny_config()
    cfg.save(tmp_path / "ok.yaml")
    assert TrainConfig.load(tmp_path / "ok.yaml") == cfg
    (tmp_path / "twice.yaml").write_text("seed: 1\nlr: 0.001\nseed: 2\n")
    with pytest.raises(ValueError, match="duplicate key 'seed'"):
        TrainConfig.load(tmp_path / "twice.yaml")


def test_every_bundled_recipe_loads():
    from napari_airm.training import config as config_module

    recipes = sorted((Path(config_module.__file__).parent / "recipes").glob("*.yaml"))
    assert len(recipes) >= 3
    for recipe in recipes:
        assert TrainConfig.load(recipe).max_steps > 0, recipe


def test_window_point_features_equal_the_dense_crop():
    """Training computes the guide on decode windows only; the values are the dense crop's."""
    from napari_airm.training.step import window_point_features
    torch.manual_seed(0)
    model = build_model({**build_model("airm-b0").cfg.to_dict(), "guide_blocks": 1})
    for p in model.guide.parameters():
        torch.nn.init.normal_(p, std=0.2)
    rgb, coarse = torch.rand(3, 3, 64, 64), (torch.rand(3, 1, 64, 64) > 0.5).float()
    corners = torch.tensor([[0, 0], [40, 10], [13, 40]])  # on the crop's edge and inside
    with torch.no_grad():
        dense = model.point_features(rgb, coarse)
        got = window_point_features(model, rgb, coarse, corners, 24)
    want = torch.stack([dense[b, :, y:y + 24, x:x + 24] for b, (y, x) in enumerate(corners.tolist())])
    torch.testing.assert_close(got, want.flatten(2).transpose(1, 2), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# snapshot averaging (SWA)
# --------------------------------------------------------------------------------------------
def _perturbed_copy(model, seed):
    import copy

    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
    return other


def test_average_of_snapshots_is_their_elementwise_mean(tmp_path):
    from napari_airm.training.average import average_models

    base = build_model("airm-b0")
    paths = [save_model(_perturbed_copy(base, s), tmp_path / f"s{s}", half=False,
                        train_config={"lr": 1e-4, "seed": s}) for s in range(3)]
    out = average_models(paths, tmp_path / "avg")
    avg = load_model(out).state_dict()
    states = [load_model(p).state_dict() for p in paths]
    for key, value in avg.items():
        if value.is_floating_point():
            expected = (states[0][key] + states[1][key] + states[2][key]) / 3
            torch.testing.assert_close(value, expected.to(value.dtype), atol=2e-3, rtol=1e-3)  # float16 file
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["train"]["seed"] == 2  # the last snapshot's recipe
    assert config["metadata"]["averaged_from"] == [str(p) for p in paths]


def test_average_refuses_models_of_different_architectures(tmp_path):
    from napari_airm.training.average import average_models

    a = save_model(build_model("airm-b0"), tmp_path / "a")
    b = save_model(build_model({**build_model("airm-b0").cfg.to_dict(), "guide_blocks": 1}), tmp_path / "b")
    with pytest.raises(ValueError, match="another architecture"):
        average_models([a, b], tmp_path / "avg")
    assert not (tmp_path / "avg").exists()
