"""The training loop on a tiny generated dataset: resume is exact, runs are protected, NaN guard,
cancellation, fine-tuning from a model folder."""
from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import numpy as np

import pytest
import torch
import yaml
from safetensors.torch import load_file

from napari_airm.data import DataError
from napari_airm.model import build_model, load_model, save_model
from napari_airm.training import TrainConfig, TrainingCancelled, train
from napari_airm.training import trainer as trainer_module
from napari_airm.training.checkpoint import has_checkpoint, load_checkpoint
from napari_airm.training.trainer import StepBatches

from conftest import make_disc_dataset


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


# --------------------------------------------------------------------------------------------
# several training folders with weights
# --------------------------------------------------------------------------------------------
def test_mixed_step_batches_draw_each_folder_by_weight_and_resume_exactly():
    from napari_airm.training.trainer import MixedStepBatches

    groups, weights = [range(0, 10), range(10, 13), range(13, 20)], [0.6, 0.1, 0.3]
    sampler = MixedStepBatches(groups, weights, batch_size=8, seed=3, start_step=0, max_steps=300)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 300 and all(len(b) == 8 for b in batches)
    n = 20
    images = np.array([i % n for b in batches for i in b])
    which = np.searchsorted([10, 13, 20], images, side="right")
    share = np.bincount(which, minlength=3) / len(images)
    np.testing.assert_allclose(share, weights, atol=0.03)  # every folder, at its weight
    # within a folder each image is used once per epoch of that folder (index = epoch * n + i)
    small = [i for b in batches for i in b if 10 <= i % n < 13]
    for e in range(len(small) // 3):
        assert sorted(small[3 * e:3 * e + 3]) == [e * n + 10, e * n + 11, e * n + 12]
    # a pure function of (seed, step): resuming at step 123 gives exactly the rest
    assert list(MixedStepBatches(groups, weights, 8, 3, 123, 300)) == batches[123:]
    assert list(MixedStepBatches(groups, weights, 8, 4, 0, 5)) != batches[:5]


def test_training_from_several_folders_draws_from_each_and_skips_held_out_pairs(tmp_path, monkeypatch):
    a = make_disc_dataset(tmp_path / "a", n=4, size=64, seed=1)
    b = make_disc_dataset(tmp_path / "b", n=12, size=64, seed=2)  # img05, img07 are held out
    seen = []
    real_getitem = trainer_module.TrainCrops.__getitem__

    def recording_getitem(self, index):
        seen.append(self.pairs[int(index) % len(self.pairs)].image)
        return real_getitem(self, index)

    monkeypatch.setattr(trainer_module.TrainCrops, "__getitem__", recording_getitem)
    cfg = tiny_config(max_steps=12, batch_size=4, identity_share=0.3,
                      data=[{"root": str(a), "weight": 0.5},
                            {"root": str(b), "weight": 0.5, "holdout": True}])
    train(cfg, None, tmp_path / "out", progress=False, device="cpu")  # None: the config's folders
    folders = [p.parent.parent for p in seen]
    assert len(seen) == 48 and folders.count(a) >= 10 and folders.count(b) >= 10
    assert not {p.stem for p in seen if p.parent.parent == b} & {"img05", "img07"}
    saved = TrainConfig.load(tmp_path / "out" / "train_config.yaml")
    assert saved.identity_share == 0.3
    assert saved.data == [{"root": str(a), "weight": 0.5, "holdout": False},
                          {"root": str(b), "weight": 0.5, "holdout": True}]


def test_the_safe_recipe_mixes_near_identity_masks_and_the_extra_domains():
    from napari_airm.training import config as config_module

    cfg = TrainConfig.load(Path(config_module.__file__).parent / "recipes" / "cpu-finetune-stage7-safe.yaml")
    assert 0.25 <= cfg.identity_share <= 0.3
    sources = cfg.sources()
    extra = [s for s in sources if "extra" in s.root.parts]
    assert len(extra) == 4 and all(s.holdout for s in extra)
    assert sum(s.weight for s in extra) / sum(s.weight for s in sources) == pytest.approx(0.4)
    assert "identity" in cfg.val_modes
    assert TrainConfig().identity_share == 0.0  # recipes that do not opt in keep their masks


# --------------------------------------------------------------------------------------------
# bad training data is found before the first step (issue 15, item 8)
# --------------------------------------------------------------------------------------------
def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])


def test_a_broken_training_file_stops_the_run_before_its_first_step(disc_dataset, tmp_path, monkeypatch):
    _truncate(disc_dataset / "masks" / "img04.png")
    steps = []
    monkeypatch.setattr(trainer_module, "training_forward",
                        lambda *a, **k: steps.append(1))  # must never be reached
    with pytest.raises(DataError, match=r"1 of 6 training pairs cannot be used.*img04\.png"):
        run(disc_dataset, tmp_path / "out")
    assert not steps and not (tmp_path / "out").exists()


@pytest.mark.parametrize("fault", ["empty", "corrupt", "no-masks", "mode"])
def test_an_unusable_validation_folder_stops_the_run_before_its_first_step(disc_dataset, tmp_path,
                                                                           monkeypatch, fault):
    val = make_disc_dataset(tmp_path / "val", n=3, size=64)
    overrides = {}
    if fault == "empty":
        for p in (val / "images").iterdir():
            p.unlink()
        match = "validation folder unusable: no images"
    elif fault == "corrupt":
        _truncate(val / "images" / "img01.jpg")
        match = r"1 of 3 validation pairs cannot be used.*img01\.jpg"
    elif fault == "no-masks":
        for p in (val / "masks").iterdir():
            p.unlink()
        match = "validation folder unusable: no image in .* has a matching mask"
    else:
        overrides["val_modes"] = ["perturb", "lowress"]
        match = r"unknown val_modes \['lowress'\]"
    steps = []
    monkeypatch.setattr(trainer_module, "training_forward", lambda *a, **k: steps.append(1))
    with pytest.raises(ValueError, match=match), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run(disc_dataset, tmp_path / "out", val=val, val_every=2, **overrides)
    assert not steps and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------
# resume after a kill in the final validation (issue 15, item 9)
# --------------------------------------------------------------------------------------------
class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs (not even the final model)."""


def test_resume_after_a_kill_in_the_final_validation_validates_it(disc_dataset, tmp_path, monkeypatch):
    real_validate = trainer_module.validate
    calls = []

    def killed_in_the_last(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the final validation, at step 4
            raise Killed()
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "validate", killed_in_the_last)
    opts = dict(val=disc_dataset, val_every=2, val_limit=2, val_modes=["perturb"])
    with pytest.raises(Killed):
        run(disc_dataset, tmp_path / "out", **opts)
    out = tmp_path / "out"
    assert not (out / "model").exists() and (out / "model-step2").is_dir()
    monkeypatch.setattr(trainer_module, "validate", real_validate)

    result = run(disc_dataset, out, resume=True, **opts)
    assert result.steps == 4 and result.last_val is not None and result.last_val["step"] == 4
    records = [json.loads(line) for line in (out / "val.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    meta = yaml.safe_load((result.model_dir / "config.yaml").read_text())["metadata"]
    assert meta["val"]["step"] == 4 and "perturb" in meta["val"]
    assert (out / "model-step4").is_dir()


def test_a_run_without_validation_says_so(disc_dataset, tmp_path, capsys):
    result = run(disc_dataset, tmp_path / "out", max_steps=2)
    assert result.last_val is None
    meta = yaml.safe_load((result.model_dir / "config.yaml").read_text())["metadata"]
    assert meta["val"] is None and meta["val_note"] == "no validation folder was given"
    assert "no validation result (no validation folder was given)" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# atomic checkpoints (issue 15, item 10)
# --------------------------------------------------------------------------------------------
def test_a_checkpoint_is_one_file_replaced_by_one_rename(tmp_path, monkeypatch):
    from napari_airm.training import checkpoint as ckpt

    model = build_model("airm-b0")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for p in model.parameters():  # one step, so the optimiser has moments to save
        p.grad = torch.ones_like(p)
    opt.step()
    d = tmp_path / "ckpt"
    ckpt.save_checkpoint(d, model, opt, 10)
    assert sorted(p.name for p in d.iterdir()) == ["state.safetensors"]
    assert ckpt.read_checkpoint_meta(d)["step"] == 10

    # a crash at the rename of the next save: the previous checkpoint stands, whole
    before = load_file(str(d / "state.safetensors"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    renames = []

    def crash(src, dst):
        renames.append(dst)
        raise Killed()

    monkeypatch.setattr(ckpt.os, "replace", crash)
    with pytest.raises(Killed):
        ckpt.save_checkpoint(d, model, opt, 20)
    assert len(renames) == 1  # one rename makes a checkpoint current; nothing else is renamed
    monkeypatch.undo()
    assert ckpt.read_checkpoint_meta(d)["step"] == 10
    after = load_file(str(d / "state.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    # the next save completes, and its tensors carry their own step
    ckpt.save_checkpoint(d, model, opt, 20)
    fresh = build_model("airm-b0")
    assert ckpt.load_checkpoint(d, fresh, None)["step"] == 20
    torch.testing.assert_close(next(fresh.parameters()), next(model.parameters()))


def test_a_stale_state_json_cannot_pair_with_newer_tensors(tmp_path):
    from napari_airm.training import checkpoint as ckpt

    model = build_model("airm-b0")
    opt = torch.optim.Adam(model.parameters())
    d = tmp_path / "ckpt"
    ckpt.save_checkpoint(d, model, opt, 30)
    (d / "state.json").write_text(json.dumps({"step": 7, "param_groups": [], "extra": {}}))
    assert ckpt.read_checkpoint_meta(d)["step"] == 30  # the tensors' own step wins


def test_checkpoints_of_the_older_two_file_layout_still_load(tmp_path):
    from safetensors.torch import save_file

    from napari_airm.training import checkpoint as ckpt

    model = build_model("airm-b0")
    opt = torch.optim.Adam(model.parameters())
    d = tmp_path / "old"
    d.mkdir()
    save_file({f"model/{k}": v.contiguous() for k, v in model.state_dict().items()},
              str(d / "state.safetensors"))
    (d / "state.json").write_text(json.dumps({"step": 5, "param_groups": opt.state_dict()["param_groups"],
                                              "extra": {}}))
    assert ckpt.has_checkpoint(d)
    assert ckpt.load_checkpoint(d, build_model("airm-b0"), opt)["step"] == 5
    (d / "state.json").write_text("{garbage")
    with pytest.raises(ValueError, match=r"checkpoint metadata in .*state\.json is damaged"):
        ckpt.read_checkpoint_meta(d)
