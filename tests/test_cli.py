"""The ``napari-airm`` command line: outputs, formats, overwrite policy and one-line errors.

A tiny untrained model folder made here stands in for the bundled model, so these tests depend
on the code only (an untrained AIRM predicts a residual of ~0 and so reproduces its input).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from napari_airm import cli, io_utils
from napari_airm.metrics import boundary_accuracy, iou


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from napari_airm.model import build_model, save_model

    return save_model(build_model("airm-b0"), tmp_path_factory.mktemp("model") / "tiny")


def disc_scene(h: int = 96, w: int = 128, seed: int = 0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    gt = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) * 0.3) ** 2
    image = np.where(gt[..., None], 200, 50) + rng.integers(0, 20, (h, w, 3))
    return image.astype(np.uint8), gt


@pytest.fixture
def files(tmp_path):
    image, gt = disc_scene()
    Image.fromarray(image).save(tmp_path / "img.png")
    Image.fromarray(gt.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    labels = gt.astype(np.uint8)
    labels[5:30, 5:30] = 3
    Image.fromarray(labels).save(tmp_path / "labels.png")
    return tmp_path


def run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err):
    assert rc != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("napari-airm: error: ")
    assert "Traceback" not in err


def no_partials(folder: Path) -> bool:
    """No temporary file, store or work folder of ours is left beside the outputs."""
    return not any(".partial-" in p.name or ".old-" in p.name or p.name.startswith(".napari-airm-")
                   for p in folder.iterdir())


# ----------------------------------------------------------------------------- refine


def test_refine_png_writes_a_mask_of_the_right_shape_and_dtype(files, model_dir, capsys):
    out = files / "refined.png"
    rc, stdout, err = run(["refine", files / "img.png", files / "mask.png", "-o", out,
                           "--model", model_dir, "--tile", 64], capsys)
    assert rc == 0, err
    assert "wrote" in stdout
    result = np.array(Image.open(out))
    assert result.shape == (96, 128) and result.dtype == np.uint8
    assert set(np.unique(result)) <= {0, 255}
    coarse = np.array(Image.open(files / "mask.png")) > 127
    assert iou(result > 127, coarse) > 0.9  # untrained model ≈ identity
    assert no_partials(files)


@pytest.mark.parametrize("command", ["refine", "demo"])
def test_engine_options_reach_the_engine_as_one_settings_object(files, model_dir, capsys,
                                                                monkeypatch, command):
    import napari_airm.api as api

    seen = []
    real_refine = api.refine
    monkeypatch.setattr(api, "refine", lambda *a, **k: seen.append(api.as_settings(
        a[2] if len(a) > 2 else k.get("settings"))) or real_refine(*a, **k))
    args = (["refine", files / "img.png", files / "mask.png", "-o", files / "two.png"]
            if command == "refine" else ["demo", "-o", files / "demo", "--size", "96x128"])
    rc, _, err = run([*args, "--model", model_dir, "--passes", 2, "--flips", 2,
                      "--reach", 7, "--no-solve", "-q"], capsys)
    assert rc == 0, err
    assert [(s.passes, s.flips, s.reach, s.solve) for s in seen] == [(2, 2, 7, False)]
    for bad in (["--passes", "0"], ["--flips", "3"], ["--reach", "0"], ["--reach", "far"], ["--snap"]):
        with pytest.raises(SystemExit) as info:
            cli.main([*map(str, args), *bad])
        assert info.value.code == 2


def test_label_images_stay_labels(files, model_dir, capsys):
    out = files / "labels_out.png"
    rc, _, err = run(["refine", files / "img.png", files / "labels.png", "-o", out,
                      "--model", model_dir], capsys)
    assert rc == 0, err
    result = np.array(Image.open(out))
    assert result.dtype == np.uint8 and result.shape == (96, 128)
    assert set(np.unique(result)) <= {0, 1, 3} and {1, 3} <= set(np.unique(result))


def test_refuses_to_overwrite_without_flag(files, model_dir, capsys):
    out = files / "exists.png"
    out.write_bytes(b"precious")
    rc, _, err = run(["refine", files / "img.png", files / "mask.png", "-o", out,
                      "--model", model_dir], capsys)
    assert_one_line_error(rc, err)
    assert "already exists" in err and "--overwrite" in err
    assert out.read_bytes() == b"precious"
    rc, _, err = run(["refine", files / "img.png", files / "mask.png", "-o", out, "--overwrite",
                      "--model", model_dir], capsys)
    assert rc == 0, err
    assert np.array(Image.open(out)).shape == (96, 128)
    assert no_partials(files)


def test_a_failed_run_leaves_no_output(files, model_dir, capsys, monkeypatch):
    import napari_airm.api as api

    def broken_refine(image, coarse, out=None, **kwargs):
        if out is not None:
            out[:10] = True  # half-written
        raise RuntimeError("boom")

    monkeypatch.setattr(api, "refine", broken_refine)
    for name in ("half.zarr", "half.png"):
        rc, _, err = run(["refine", files / "img.png", files / "mask.png", "-o", files / name,
                          "--model", model_dir], capsys)
        assert_one_line_error(rc, err)
        assert "boom" in err and "--debug" in err
        assert not (files / name).exists()
    assert no_partials(files)


def _bad_inputs(tmp: Path):
    """(name, argv-without-output, expected words) of inputs a user can get wrong."""
    image, gt = disc_scene()
    (tmp / "broken.png").write_bytes(b"this is not a png")
    Image.fromarray(gt[:50, :60].astype(np.uint8) * 255).save(tmp / "small_mask.png")
    tifffile.imwrite(tmp / "int32.tif", image.astype(np.int32))
    tifffile.imwrite(tmp / "stack.tif", np.zeros((4, 96, 128), np.uint8))
    tifffile.imwrite(tmp / "complex.tif", np.zeros((96, 128), np.complex64))
    return [
        ("missing image", [tmp / "nope.png", tmp / "mask.png"], "does not exist"),
        ("missing mask", [tmp / "img.png", tmp / "nope.png"], "does not exist"),
        ("unreadable image", [tmp / "broken.png", tmp / "mask.png"], "cannot read"),
        ("size mismatch", [tmp / "img.png", tmp / "small_mask.png"], "same size"),
        ("unsupported dtype", [tmp / "int32.tif", tmp / "mask.png"], "dtype"),
        ("unsupported mask dtype", [tmp / "img.png", tmp / "complex.tif"], "dtype"),
        ("3-D mask", [tmp / "img.png", tmp / "stack.tif"], "2-D"),
        ("jpeg output", [tmp / "img.png", tmp / "mask.png", "-o", tmp / "out.jpg"], "JPEG"),
    ]


@pytest.mark.parametrize("case", range(8))
def test_bad_input_is_one_clear_line(files, model_dir, capsys, case):
    name, argv, words = _bad_inputs(files)[case]
    if "-o" not in argv:
        argv = argv + ["-o", files / "out.png"]
    rc, _, err = run(["refine", *argv, "--model", model_dir], capsys)
    assert_one_line_error(rc, err)
    assert words in err, (name, err)
    assert not (files / "out.png").exists()


def test_missing_model_and_device_errors(files, capsys):
    rc, _, err = run(["refine", files / "img.png", files / "mask.png", "-o", files / "o.png",
                      "--model", files / "no-model"], capsys)
    assert_one_line_error(rc, err)
    rc, _, err = run(["refine", files / "img.png", files / "mask.png", "-o", files / "o.png",
                      "--model", files], capsys)
    assert_one_line_error(rc, err)
    assert "not a model folder" in err


def test_debug_shows_the_traceback(files, model_dir):
    with pytest.raises(ValueError, match="does not exist"):
        cli.main(["--debug", "refine", str(files / "nope.png"), str(files / "mask.png"),
                  "-o", str(files / "o.png")])


def test_console_script_exit_status_and_stderr(files):
    """The real process: non-zero exit, one line on stderr, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "napari_airm.cli", "refine", str(files / "nope.png"),
                           str(files / "mask.png"), "-o", str(files / "o.png")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"napari-airm: error: image {files / 'nope.png'} does not exist"]


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["refine"])
    assert info.value.code == 2
    assert cli.main([]) == 2


# ----------------------------------------------------------------------------- zarr / tif


def test_zarr_round_trip(tmp_path, model_dir, capsys):
    image, gt = disc_scene(100, 140)
    zimg = zarr.open_array(str(tmp_path / "image.zarr"), mode="w", shape=image.shape,
                           chunks=(32, 32, 3), dtype=np.uint8)
    zimg[...] = image
    zmask = zarr.open_array(str(tmp_path / "mask.zarr"), mode="w", shape=gt.shape, chunks=(32, 32),
                            dtype=np.uint8)
    zmask[...] = gt.astype(np.uint8) * 255
    out = tmp_path / "refined.zarr"
    rc, _, err = run(["refine", tmp_path / "image.zarr", tmp_path / "mask.zarr", "-o", out,
                      "--model", model_dir, "--tile", 64], capsys)
    assert rc == 0, err
    result = zarr.open_array(str(out), mode="r")
    assert result.shape == gt.shape and result.dtype == bool
    assert result.chunks == (64, 64)  # chunks follow the tiles: each tile writes whole chunks
    assert iou(result[:], gt) > 0.9
    assert no_partials(tmp_path)
    # zarr in, png and tif out; and the zarr output read back as an input mask
    for name in ("from_zarr.png", "from_zarr.tif"):
        rc, _, err = run(["refine", tmp_path / "image.zarr", out, "-o", tmp_path / name,
                          "--model", model_dir], capsys)
        assert rc == 0, err
    assert tifffile.imread(tmp_path / "from_zarr.tif").shape == gt.shape
    assert np.array(Image.open(tmp_path / "from_zarr.png")).shape == gt.shape


def test_large_tiff_output_goes_through_a_disk_backed_array(files, model_dir, capsys, monkeypatch):
    monkeypatch.setattr(io_utils, "MEMMAP_PIXELS", 100)  # treat the 96×128 mask as huge
    out = files / "big.tif"
    rc, _, err = run(["refine", files / "img.png", files / "mask.png", "-o", out,
                      "--model", model_dir, "--tile", 64], capsys)
    assert rc == 0, err
    result = tifffile.imread(out)
    assert result.shape == (96, 128) and set(np.unique(result)) <= {0, 255}
    assert no_partials(files)


def test_channel_first_zarr_and_lazy_tiff_inputs(tmp_path, monkeypatch):
    image, gt = disc_scene(64, 80)
    z = zarr.open_array(str(tmp_path / "cyx.zarr"), mode="w", shape=(3, 64, 80), dtype=np.uint8,
                        chunks=(3, 32, 32))
    z[...] = image.transpose(2, 0, 1)
    arr = io_utils.read_image(tmp_path / "cyx.zarr")
    assert arr.shape == (64, 80, 3)
    assert np.array_equal(np.asarray(arr), image)
    tifffile.imwrite(tmp_path / "big.tif", image, tile=(32, 32))
    monkeypatch.setattr(io_utils, "LAZY_TIFF_BYTES", 0)  # treat every TIFF as big
    lazy = io_utils.read_image(tmp_path / "big.tif")
    assert not isinstance(lazy, np.ndarray) and lazy.shape == image.shape
    assert np.array_equal(np.asarray(lazy[10:20, 5:15]), image[10:20, 5:15])
    tifffile.imwrite(tmp_path / "labels.tif", (gt * 7).astype(np.uint16), tile=(32, 32))
    mask, kind = io_utils.read_mask(tmp_path / "labels.tif")
    assert kind == "labels" and mask.shape == gt.shape


# ----------------------------------------------------------------------------- evaluate


def test_evaluate_prints_table_and_json_with_the_right_numbers(tmp_path, capsys):
    pred_dir, gt_dir, coarse_dir = (tmp_path / d for d in ("pred", "gt", "coarse"))
    for d in (pred_dir, gt_dir, coarse_dir):
        d.mkdir()
    gts, preds, coarse = {}, {}, {}
    g = np.zeros((40, 40), bool); g[10:20, 10:20] = True            # 100 px
    p = np.zeros((40, 40), bool); p[10:20, 10:25] = True            # 150 px, 100 shared
    gts["a"], preds["a"], coarse["a"] = g, p, np.zeros_like(g)
    g = np.zeros((30, 50), bool); g[0:10, 0:5] = True               # 50 px
    p = np.zeros((30, 50), bool); p[0:5, 0:5] = True                # 25 px inside
    gts["b"], preds["b"], coarse["b"] = g, p, g.copy()
    for name in gts:
        Image.fromarray(gts[name].astype(np.uint8) * 255).save(gt_dir / f"{name}.png")
        Image.fromarray(preds[name]).save(pred_dir / f"{name}.png")  # 1-bit PNG
        Image.fromarray(coarse[name].astype(np.uint8)).save(coarse_dir / f"{name}.png")  # 0/1
    Image.fromarray(gts["a"]).save(gt_dir / "only_gt.png")  # unmatched: reported, left out
    report_path = tmp_path / "report.json"
    rc, out, err = run(["evaluate", pred_dir, gt_dir, "--coarse", coarse_dir, "--json", report_path],
                       capsys)
    assert rc == 0, err
    assert "1 file(s) without a partner" in err
    report = json.loads(report_path.read_text())
    assert report["refined"]["iou"] == pytest.approx(125 / 200)  # total inter / total union
    assert report["refined"]["mean_image_iou"] == pytest.approx((100 / 150 + 25 / 50) / 2)
    expected_mba = np.mean([boundary_accuracy(preds[n], gts[n]) for n in ("a", "b")])
    assert report["refined"]["mba"] == pytest.approx(expected_mba)
    assert report["coarse"]["iou"] == pytest.approx(50 / 150)
    assert report["gain"]["iou"] == pytest.approx(125 / 200 - 50 / 150)
    assert [r["name"] for r in report["per_image"]] == ["a", "b"]
    assert "62.50" in out and "33.33" in out and "+29.17" in out  # overall table, in %
    assert "66.67" in out and "50.00" in out  # per-image rows
    assert f"{100 * expected_mba:.2f}" in out


def test_evaluate_single_files_and_errors(tmp_path, capsys):
    g = np.zeros((20, 20), np.uint8); g[5:15, 5:15] = 255
    Image.fromarray(g).save(tmp_path / "gt.png")
    Image.fromarray(g).save(tmp_path / "pred.png")
    rc, out, _ = run(["evaluate", tmp_path / "pred.png", tmp_path / "gt.png", "--no-per-image"], capsys)
    assert rc == 0 and "100.00" in out
    Image.fromarray(g[:10]).save(tmp_path / "short.png")
    rc, _, err = run(["evaluate", tmp_path / "short.png", tmp_path / "gt.png"], capsys)
    assert_one_line_error(rc, err)
    rc, _, err = run(["evaluate", tmp_path / "pred.png", tmp_path], capsys)
    assert_one_line_error(rc, err)


# ----------------------------------------------------------------------------- other commands


def test_demo_prints_scores_and_time_and_writes_the_mask(tmp_path, model_dir, capsys):
    rc, out, err = run(["demo", "--size", "128x160", "-o", tmp_path / "demo", "--model", model_dir,
                        "--json", tmp_path / "demo.json"], capsys)
    assert rc == 0, err
    for word in ("coarse", "refined", "gain", "IoU", "mBA", "wall time"):
        assert word in out
    refined = np.array(Image.open(tmp_path / "demo" / "refined.png"))
    assert refined.shape == (128, 160)
    report = json.loads((tmp_path / "demo.json").read_text())
    assert 0 <= report["refined"]["iou"] <= 1 and "gain" in report
    rc, _, err = run(["demo", "--size", "12x12", "-o", tmp_path / "demo"], capsys)
    assert_one_line_error(rc, err)


def test_bench_without_the_engine_module_says_so(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "napari_airm.engine.bench", None)
    rc, _, err = run(["bench"], capsys)
    assert_one_line_error(rc, err)
    assert "napari_airm.engine.bench" in err


def test_bench_calls_run_bench(capsys, monkeypatch):
    import types

    calls = {}
    fake = types.ModuleType("napari_airm.engine.bench")
    fake.run_bench = lambda **kw: calls.update(kw) or kw["out"]("bench ran")
    monkeypatch.setitem(sys.modules, "napari_airm.engine.bench", fake)
    fake.zarr_sizes = lambda size: (size // 4, size)
    rc, out, _ = run(["bench", "--zarr-size", 4096, "--tile", 512, "--skip", "photo,dense"], capsys)
    assert rc == 0 and "bench ran" in out
    assert calls["sizes"] == (1024, 4096) and calls["tile"] == 512 and calls["image"] is None
    assert calls["skip"] == {"photo", "dense"}


def test_refine_many_collects_pairs(files, model_dir, capsys, monkeypatch):
    import napari_airm.api as api

    seen = {}

    def fake_refine_many(pairs, out_dir, settings=None, **kwargs):
        seen.update(pairs=pairs, out_dir=out_dir, settings=settings, **kwargs)
        return [Path(out_dir) / f"{Path(i).stem}.png" for i, _ in pairs]

    monkeypatch.setattr(api, "refine_many", fake_refine_many)
    (files / "imgs").mkdir(); (files / "masks").mkdir()
    for n in ("x", "y"):
        (files / "imgs" / f"{n}.png").write_bytes((files / "img.png").read_bytes())
        (files / "masks" / f"{n}.png").write_bytes((files / "mask.png").read_bytes())
    rc, out, err = run(["refine-many", "--images", files / "imgs", "--masks", files / "masks",
                        "-o", files / "outdir", "--scheduler", "tcp://127.0.0.1:8786",
                        "--model", model_dir], capsys)
    assert rc == 0, err
    assert [Path(i).name for i, _ in seen["pairs"]] == ["x.png", "y.png"]
    assert seen["scheduler"] == "tcp://127.0.0.1:8786" and "x.png" in out
    assert seen["settings"].reach == "auto" and seen["settings"].solve
    rc, _, err = run(["batch", files / "img.png", "-o", files / "outdir"], capsys)
    assert_one_line_error(rc, err)
    assert "pairs" in err


def test_train_runs_a_few_steps(tmp_path, disc_dataset, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("model: airm-b0\ncrop: 64\nbatch_size: 2\nworkers: 0\nmax_steps: 2\n"
                   "checkpoint_every: 1\nval_every: 0\nlog_every: 1\n")
    rc, out, err = run(["train", "--config", cfg, "--data", disc_dataset, "--out", tmp_path / "run",
                        "--quiet"], capsys)
    assert rc == 0, err
    assert "trained 2 steps" in out
    assert (tmp_path / "run" / "model" / "weights.safetensors").is_file()
    # the same --out again without --resume is refused with one line
    rc, _, err = run(["train", "--config", cfg, "--data", disc_dataset, "--out", tmp_path / "run",
                      "--quiet"], capsys)
    assert_one_line_error(rc, err)
    assert "--resume" in err
    rc, _, err = run(["train", "--config", "no-such-recipe", "--data", disc_dataset, "--out",
                      tmp_path / "run2"], capsys)
    assert_one_line_error(rc, err)
    assert "cpu-default" in err


# ----------------------------------------------------------------------------- README / CI


REPO = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    import re

    text = (REPO / "README.md").read_text()
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_starts_with_the_two_setup_commands_and_ci_runs_the_second():
    commands = _readme_commands()
    assert commands[0] == 'pip install ".[qt]" && napari-airm demo'
    test_command = commands[1]
    assert "\n" not in test_command and test_command.startswith("apt-get update && apt-get install -y")
    assert 'pip install -e ".[dev]"' in test_command and test_command.endswith("python -m pytest -q")
    ci = (REPO / ".ci" / "run").read_text()
    assert test_command in ci.splitlines(), ".ci/run must run README's test command verbatim"
    assert os.access(REPO / ".ci" / "run", os.X_OK)
    assert "set -euo pipefail" in ci


def test_demo_is_a_registered_subcommand():
    from napari_airm.cli.demo import run_demo

    parser = cli.build_parser()
    args = parser.parse_args(["demo"])
    assert args.func is run_demo and args.size == "3072x4096"


def test_average_writes_a_loadable_model_and_protects_an_existing_folder(model_dir, tmp_path, capsys):
    from napari_airm.model import load_model

    out = tmp_path / "avg"
    rc, stdout, _ = run(["average", model_dir, model_dir, "--out", out], capsys)
    assert rc == 0 and "averaged 2 models" in stdout
    load_model(out)
    before = (out / "weights.safetensors").read_bytes()
    rc, _, err = run(["average", model_dir, model_dir, "--out", out], capsys)
    assert_one_line_error(rc, err)
    assert "--overwrite" in err and (out / "weights.safetensors").read_bytes() == before
    rc, _, err = run(["average", model_dir, "--out", tmp_path / "one"], capsys)
    assert_one_line_error(rc, err)
    assert "at least two" in err


def test_engine_notes_are_one_line_on_stderr(files, model_dir, capsys, monkeypatch):
    """A warning the engine raises for the user (e.g. a model out of its domain) is shown as
    one 'napari-airm: note:' line, not a Python warning with a source line."""
    import warnings

    import napari_airm.api as api

    real_refine = api.refine

    def noisy(*a, **k):
        warnings.warn("the model's reading of this image disagrees", UserWarning)
        return real_refine(*a, **k)

    monkeypatch.setattr(api, "refine", noisy)
    rc, _, err = run(["refine", files / "img.png", files / "mask.png", "-o", files / "n.png",
                      "--model", model_dir, "-q"], capsys)
    assert rc == 0
    assert "napari-airm: note: the model's reading of this image disagrees" in err
    assert "UserWarning" not in err
