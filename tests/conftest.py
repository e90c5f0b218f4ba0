"""Shared fixtures: tiny synthetic image/mask folders made in tmp_path (no downloads)."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the network (timm / huggingface)

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# the team's real data: $NAPARI_AIRM_DATA when set (as the benchmarks read it), else ../shared/data
SHARED_DATA = Path(os.environ.get("NAPARI_AIRM_DATA")
                   or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def disc_mask(height: int, width: int, center, radius: float) -> np.ndarray:
    """Boolean disc of ``radius`` pixels around ``center`` (y, x)."""
    yy, xx = np.mgrid[:height, :width]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius ** 2


def write_pair(root: Path, name: str, image: np.ndarray, mask: np.ndarray,
               image_suffix: str = ".jpg") -> None:
    """Write ``images/NAME.jpg`` (RGB) and ``masks/NAME.png`` (8-bit 0/255) the DUTS way."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "images" / f"{name}{image_suffix}", quality=95)
    Image.fromarray((mask.astype(np.uint8) * 255)).save(root / "masks" / f"{name}.png")


def make_disc_dataset(root: Path, n: int = 6, size: int = 96, seed: int = 0) -> Path:
    """``n`` pairs of ``size``² RGB images with one textured disc each and its exact mask."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        cy, cx = rng.uniform(0.35, 0.65, 2) * size
        radius = rng.uniform(0.2, 0.35) * size
        mask = disc_mask(size, size, (cy, cx), radius)
        background = rng.integers(0, 90, 3)
        foreground = rng.integers(150, 256, 3)
        image = np.where(mask[..., None], foreground, background).astype(np.int16)
        image += rng.integers(-15, 16, image.shape)  # some texture
        write_pair(root, f"img{i:02d}", np.clip(image, 0, 255).astype(np.uint8), mask)
    return root


@pytest.fixture
def disc_dataset(tmp_path) -> Path:
    """A tiny training folder: 6 images of 96×96 px with a disc each."""
    return make_disc_dataset(tmp_path / "data", n=6, size=96)


@pytest.fixture(autouse=True)
def _one_thread_and_seed():
    """Keep the tests light on a shared CPU and independent of test order."""
    threads = torch.get_num_threads()
    if os.environ.get("CI") != "true":  # CI has the machine to itself; a developer's may be busy
        torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def duts_val_cases():
    """A few real validation images with their fixed perturbed coarse masks (skip if absent)."""
    root = SHARED_DATA / "duts-tr" / "val"
    if not root.is_dir():
        pytest.skip(f"real data not found at {root}")
    from napari_airm.data import ValCases

    cases = ValCases(root, mode="perturb", limit=6)
    return [case[1:] for case in cases]
