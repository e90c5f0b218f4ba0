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


# ----------------------------------------------------------------------------- bench


def _tiny_photo(root: Path) -> Path:
    """A data root holding uhr/aeroplane.jpg and its coarse mask, as the team's data does."""
    (root / "uhr").mkdir(parents=True)
    yy, xx = np.mgrid[:80, :96]
    disc = (yy - 40) ** 2 + (xx - 48) ** 2 < 600
    Image.fromarray(np.where(disc[..., None], 200, 60).repeat(3, -1).astype(np.uint8)).save(
        root / "uhr" / "aeroplane.jpg")
    Image.fromarray(disc.astype(np.uint8) * 255).save(root / "uhr" / "aeroplane_coarse.png")
    return root


def test_bench_finds_the_photo_where_it_is_told_or_beside_the_working_directory(tmp_path, monkeypatch):
    from napari_airm.engine import bench

    data = _tiny_photo(tmp_path / "somewhere")
    monkeypatch.delenv("NAPARI_AIRM_DATA", raising=False)
    assert bench.find_photo(data)[0] == data / "uhr" / "aeroplane.jpg"
    monkeypatch.setenv("NAPARI_AIRM_DATA", str(data))
    assert bench.find_photo()[0] == data / "uhr" / "aeroplane.jpg"
    monkeypatch.delenv("NAPARI_AIRM_DATA")
    project = tmp_path / "project"
    _tiny_photo(project / "shared" / "data")
    (project / "repo").mkdir()
    monkeypatch.chdir(project / "repo")  # a clone beside shared/, the package installed anywhere
    assert bench.find_photo()[0].resolve() == (project / "shared" / "data" / "uhr" / "aeroplane.jpg").resolve()
    looked = bench.find_photo(tmp_path / "empty")
    assert looked == [tmp_path / "empty"]


def test_bench_times_the_photo_from_a_data_root_and_skips_on_request(tmp_path, tiny_model, capsys):
    from napari_airm import cli

    data = _tiny_photo(tmp_path / "data")
    rc = cli.main(["bench", "--data-root", str(data), "--skip", "zarr,dense", "--model", str(tiny_model),
                   "--tile", "64"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert f"real 96x80 ({data / 'uhr' / 'aeroplane.jpg'}): fast" in out
    assert "dense" not in out and "zarr" not in out
    rc = cli.main(["bench", "--data-root", str(tmp_path), "--skip", "zarr"])
    out, err = capsys.readouterr()
    assert rc == 0 and "real photo not found" in out and "--data-root" in out


def test_bench_reports_growth_only_between_different_sizes(monkeypatch):
    from napari_airm.engine import bench

    def fake(size, *args):
        return {"size": size, "seconds": 1.0, "peak_rss_mb": 100.0 + size / 100, "baseline_rss_mb": 90.0,
                "megapixels": size * size / 1e6, "megapixels_per_second": size * size / 1e6}

    monkeypatch.setattr(bench, "bench_zarr", fake)
    lines: list[str] = []
    report = bench.run_bench(sizes=(1024, 1024), skip={"photo"}, out=lines.append)
    assert len(report["zarr"]) == 1 and "memory_growth" not in report
    assert not any("growth" in line for line in lines)
    assert bench.zarr_sizes(1024) == (256, 1024) and bench.zarr_sizes(200) == (200,)
    lines.clear()
    report = bench.run_bench(sizes=(4096, 1024), skip={"photo"}, out=lines.append)
    assert [r["size"] for r in report["zarr"]] == [1024, 4096]
    assert "peak memory growth 1024² -> 4096² (16x the pixels)" in lines[-1]


@pytest.mark.slow  # two fresh Python processes that import torch
def test_bench_measures_each_size_in_a_process_whose_peak_starts_at_its_own_start(tmp_path, tiny_model):
    """ru_maxrss would report at least this process's peak (Linux carries it across fork and
    exec); each child reports its own."""
    from napari_airm.engine import bench

    ballast = np.ones(3 * 2**29, np.uint8)  # 1.5 GiB touched: this process's peak is far above a child's
    parent_peak = bench.peak_rss_mb()
    del ballast
    lines: list[str] = []
    report = bench.run_bench(sizes=(96, 160), tile=64, model=str(tiny_model), skip={"photo"},
                             workdir=str(tmp_path), out=lines.append)
    sizes = [r["size"] for r in report["zarr"]]
    assert sizes == [96, 160]
    for r in report["zarr"]:
        assert 0 < r["baseline_rss_mb"] <= r["peak_rss_mb"] < parent_peak - 1024
    assert "peak memory growth 96² -> 160²" in lines[-1]


# ----------------------------------------------------------------------------- first command


REPO = Path(__file__).resolve().parents[1]
QT_BINDINGS = ("pyqt6", "pyqt5", "pyside6", "pyside2")


def test_the_first_command_installs_a_qt_binding_for_the_plugin():
    """Without a binding, 'napari -w napari-airm' stops with 'No Qt bindings could be found'."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    qt_extra = " ".join(project["optional-dependencies"]["qt"]).lower()
    assert any(binding in qt_extra for binding in QT_BINDINGS)
    first = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)[0]
    assert first.strip() == 'pip install ".[qt]" && napari-airm demo'


def test_no_page_tells_users_to_install_from_the_package_index():
    """napari-airm is installed from the clone; 'pip install napari-airm[qt]' finds nothing."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    wrong = [f"{p.name}:{i}" for p in pages for i, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"pip install [\"']?napari-airm\b", line)]
    assert not wrong, f"install from the clone (pip install \".[qt]\"), not the index: {wrong}"


# ----------------------------------------------------------------------------- the installed command


def _console(tmp_path: Path, argv: list[str], before: str = "") -> subprocess.CompletedProcess:
    """Run the installed command's entry point in a fresh process, its output piped."""
    code = ("import atexit, sys\n" + before +
            "atexit.register(lambda: open('exit-handlers-ran', 'w').close())\n"
            "from napari_airm.cli import console_main\n"
            f"sys.argv = ['napari-airm'] + {argv!r}\n"
            "console_main()\n")
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)


def test_the_command_ends_quickly_yet_keeps_its_output_exit_status_and_exit_handlers(tmp_path, tiny_model):
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / "img.png")
    Image.fromarray(_square(64, 10)).save(tmp_path / "mask.png")
    proc = _console(tmp_path, ["refine", "img.png", "mask.png", "-o", "out.png", "--model",
                               str(tiny_model), "-q"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("wrote out.png (64x64 binary mask) in ")  # flushed into the pipe
    assert np.array(Image.open(tmp_path / "out.png")).shape == (64, 64)
    assert (tmp_path / "exit-handlers-ran").exists()


def test_the_quick_exit_keeps_a_failing_commands_status(tmp_path):
    Image.fromarray(_square(64, 10)).save(tmp_path / "gt.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "pred.png")
    proc = _console(tmp_path, ["evaluate", "pred.png", "gt.png"], before="import torch\n")
    assert proc.returncode == 1
    assert proc.stderr.startswith("napari-airm: error: ") and len(proc.stderr.splitlines()) == 1
    assert (tmp_path / "exit-handlers-ran").exists()
