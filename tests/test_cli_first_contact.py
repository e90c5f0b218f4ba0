"""What a newcomer meets first on the command line (issue 14): start-up cost, honest times,
and a ``bench`` that works outside the source checkout."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
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
