"""One image's tiles as dask.distributed tasks (engine/distributed.py): the same pixels as the
single process, a lost worker costs only its tasks, a stopped run says it is incomplete."""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from napari_airm import refine
from napari_airm.engine.distributed import COMPLETE_ATTR
from napari_airm.engine.errors import Cancelled, InputError
from napari_airm.model import build_model, save_model

sys.path.insert(0, str(Path(__file__).parent))
from test_engine import scene  # noqa: E402

distributed = pytest.importorskip("distributed")

TILE = 512  # a 1056² image at the default global side: one tile stage, 3×3 groups of 512²


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> str:
    """An untrained model whose decoder output is made large (it really changes the mask),
    saved in full precision: the caller and every worker load the same weights from it."""
    torch.manual_seed(0)
    model = build_model("airm-lite0", encoder_init=None).eval()
    with torch.no_grad():
        model.shared.weights[-1].mul_(2000)
    return str(save_model(model, tmp_path_factory.mktemp("model") / "busy", half=False))


def _write_zarr(path: Path, array: np.ndarray, chunk: int = 256):
    z = zarr.open_array(str(path), mode="w", shape=array.shape, dtype=array.dtype,
                        chunks=(chunk, chunk) + array.shape[2:])
    z[...] = array
    return z


@pytest.fixture(scope="module")
def stores(tmp_path_factory, model_folder):
    """image.zarr and coarse.zarr of a generated scene, and the single-process result."""
    folder = tmp_path_factory.mktemp("scene")
    image, _, coarse = scene(1056, 1056, seed=4)
    z_image = _write_zarr(folder / "image.zarr", image)
    z_coarse = _write_zarr(folder / "coarse.zarr", coarse)
    expected = refine(z_image, z_coarse, model=model_folder, device="cpu", tile=TILE)
    assert (expected != coarse).sum() > 1000  # the model moves the boundary: a real check
    return folder, z_image, z_coarse, expected


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes (as scheduler="local" starts them), shared by the
    tests of this file."""
    from napari_airm.engine.distributed import connect

    with connect("local", n_workers=2) as c:
        yield c


def _new_out(path: Path, shape, chunk: int = 256):
    return zarr.open_array(str(path), mode="w", shape=shape, dtype=bool, chunks=(chunk, chunk))


def test_tiles_as_tasks_give_the_single_process_output(stores, client, model_folder, tmp_path):
    from dask.distributed import get_task_stream

    _, z_image, z_coarse, expected = stores
    out = _new_out(tmp_path / "out.zarr", expected.shape)
    seen = []
    with get_task_stream(client) as stream:
        result = refine(z_image, z_coarse, model=model_folder, device="cpu", tile=TILE, out=out,
                        scheduler=client, progress=lambda done, total: seen.append((done, total)))
    assert result is out
    np.testing.assert_array_equal(out[...], expected)
    assert out.attrs[COMPLETE_ATTR] is True
    assert seen[-1][0] == seen[-1][1]  # progress reaches its total
    groups = {t["key"] for t in stream.data if str(t["key"]).startswith("airm-group")}
    assert 0 < len(groups) < 9  # groups far from the boundary were filled without a task


def test_the_caller_holds_no_pixels_of_the_groups_it_fills(stores, client, model_folder, tmp_path,
                                                            monkeypatch):
    """Groups far from the boundary (nearly the whole of a huge image) wait to be written
    while the tasks are submitted: the caller keeps one class per tile of them, not their
    pixels, so its memory does not grow with the image."""
    import pickle

    from napari_airm.engine import distributed as dist

    _, z_image, z_coarse, expected = stores
    held = []
    run_tasks = dist._run_tasks

    def spy(client, job, tasks, fills, *args):
        held.extend(fills)
        return run_tasks(client, job, tasks, fills, *args)

    monkeypatch.setattr(dist, "_run_tasks", spy)
    out = _new_out(tmp_path / "out.zarr", expected.shape)
    refine(z_image, z_coarse, model=model_folder, device="cpu", tile=TILE, out=out, scheduler=client)
    np.testing.assert_array_equal(out[...], expected)
    pixels = sum((g[1] - g[0]) * (g[3] - g[2]) for g, _ in held)
    assert pixels > 0  # some groups were filled
    assert len(pickle.dumps(held)) < pixels / 100


def test_a_two_stage_cascade_without_trust_region_is_identical(client, model_folder, tmp_path):
    """Two tile stages (the first one's map seeds the second inside each task), and the
    skip test of the network alone (the global map, not the given mask)."""
    image, _, coarse = scene(800, 800, seed=4)
    kwargs = dict(model=model_folder, device="cpu", tile=256, global_side=96, reach=None)
    expected = refine(image, coarse, **kwargs)
    assert (expected != coarse).sum() > 1000
    z_image = _write_zarr(tmp_path / "image.zarr", image)
    z_coarse = _write_zarr(tmp_path / "coarse.zarr", coarse)
    out = _new_out(tmp_path / "out.zarr", coarse.shape)
    refine(z_image, z_coarse, out=out, scheduler=client, **kwargs)
    np.testing.assert_array_equal(out[...], expected)


def test_a_worker_killed_mid_run_costs_only_its_tasks(stores, client, model_folder, tmp_path):
    _, z_image, z_coarse, expected = stores
    pids = client.run(os.getpid)
    killed = []

    def kill_a_busy_worker():
        """SIGKILL the first worker seen holding one of this run's group tasks."""
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            for address, keys in client.processing().items():
                if any(str(k).startswith("airm-group") for k in keys) and address in pids:
                    os.kill(pids[address], signal.SIGKILL)
                    killed.append(address)
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    out = _new_out(tmp_path / "out.zarr", expected.shape)
    try:
        refine(z_image, z_coarse, model=model_folder, device="cpu", tile=TILE, out=out,
               scheduler=client)
    finally:
        killer.join()
    assert killed, "no worker held a task of the run"
    np.testing.assert_array_equal(out[...], expected)
    assert out.attrs[COMPLETE_ATTR] is True


def test_a_cancelled_run_leaves_the_output_marked_incomplete(stores, client, model_folder, tmp_path):
    _, z_image, z_coarse, expected = stores
    out = _new_out(tmp_path / "out.zarr", expected.shape)
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 3  # after the global stage, while the tasks run

    with pytest.raises(Cancelled):
        refine(z_image, z_coarse, model=model_folder, device="cpu", tile=TILE, out=out,
               scheduler=client, cancel=cancel)
    assert out.attrs[COMPLETE_ATTR] is False


def test_the_output_must_be_a_zarr_array_workers_can_open(stores, client, model_folder):
    _, z_image, z_coarse, expected = stores
    with pytest.raises(InputError, match="zarr array"):
        refine(z_image, z_coarse, model=model_folder, device="cpu", scheduler=client,
               out=np.zeros(expected.shape, bool))


def test_cli_scheduler_local(stores, model_folder, tmp_path, monkeypatch):
    from napari_airm.cli import main

    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # "local": one worker per core; one is enough here
    folder, _, _, expected = stores
    target = tmp_path / "refined.zarr"
    code = main(["refine", str(folder / "image.zarr"), str(folder / "coarse.zarr"), "-o", str(target),
                 "--tile", str(TILE), "--model", model_folder, "--device", "cpu",
                 "--scheduler", "local", "-q"])
    assert code == 0
    out = zarr.open_array(str(target), mode="r")
    np.testing.assert_array_equal(out[...], expected)
    assert out.attrs[COMPLETE_ATTR] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["refined.zarr"]  # no partial left
