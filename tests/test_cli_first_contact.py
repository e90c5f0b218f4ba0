"""What a newcomer meets first on the command line (issue 14): start-up cost, honest times,
and a ``bench`` that works outside the source checkout."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _square(size: int, top: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[top:top + 30, 10:40] = 255
    return mask


def test_evaluate_scores_right_without_importing_torch(tmp_path):
    """Scoring masks needs no network: importing torch would cost seconds for nothing."""
    Image.fromarray(_square(64, 10)).save(tmp_path / "gt.png")
    Image.fromarray(_square(64, 12)).save(tmp_path / "pred.png")
    code = ("import sys\n"
            "from napari_airm import cli\n"
            "rc = cli.main(['evaluate', 'pred.png', 'gt.png', '--json', 'scores.json'])\n"
            "print('TORCH', 'torch' in sys.modules)\n"
            "sys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "TORCH False" in proc.stdout
    report = json.loads((tmp_path / "scores.json").read_text())
    assert abs(report["refined"]["iou"] - 28 * 30 / (32 * 30)) < 1e-9  # rows 12..39 of 10..41


def test_importing_the_package_and_its_api_loads_no_torch():
    code = ("import sys, napari_airm, napari_airm.api, napari_airm.cli, napari_airm.io_utils\n"
            "print(sorted(m for m in ('torch', 'timm', 'napari', 'distributed') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- honest times


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from napari_airm.model import build_model, save_model

    return save_model(build_model("airm-b0"), tmp_path_factory.mktemp("model") / "tiny")


def _seconds(pattern: str, text: str) -> list[float]:
    match = re.search(pattern, text)
    assert match, text
    return [float(v) for v in match.groups()]


def test_refine_reports_the_wall_time_of_the_whole_command(tmp_path, tiny_model, capsys, monkeypatch):
    """The time printed is what the user waited: slow reading (and model loading) included."""
    from napari_airm import cli, io_utils

    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / "img.png")
    Image.fromarray(_square(64, 10)).save(tmp_path / "mask.png")
    read_image = io_utils.read_image
    monkeypatch.setattr(io_utils, "read_image", lambda p: time.sleep(0.6) or read_image(p))
    t0 = time.perf_counter()
    rc = cli.main(["refine", str(tmp_path / "img.png"), str(tmp_path / "mask.png"), "-o",
                   str(tmp_path / "out.png"), "--model", str(tiny_model), "-q"])
    wall = time.perf_counter() - t0
    out, err = capsys.readouterr()
    assert rc == 0, err
    total, load, refine = _seconds(r"in ([\d.]+) s \(start-up, reading and model load ([\d.]+) s; "
                                   r"refine and write ([\d.]+) s\)", out)
    assert abs(total - wall) <= 0.1 and load >= 0.6
    assert abs(load + refine - total) <= 0.11  # each rounded to 0.1 s


def test_demo_reports_the_wall_time_of_the_whole_command(tmp_path, tiny_model, capsys):
    from napari_airm import cli

    t0 = time.perf_counter()
    rc = cli.main(["demo", "--size", "96x128", "-o", str(tmp_path / "demo"), "--model",
                   str(tiny_model), "-q", "--json", str(tmp_path / "demo.json")])
    wall = time.perf_counter() - t0
    out, err = capsys.readouterr()
    assert rc == 0, err
    (total,) = _seconds(r"wall time: ([\d.]+) s from the command's start", out)
    assert abs(total - wall) <= 0.1
    seconds = json.loads((tmp_path / "demo.json").read_text())["seconds"]
    parts = seconds["startup"] + seconds["sample"] + seconds["model_load"] + seconds["refine"]
    assert parts <= seconds["total"] <= wall
