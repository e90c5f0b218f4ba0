"""Folders of ``images/NAME.*`` + ``masks/NAME.png`` pairs (the DUTS-TR layout, also what the
napari retrain widget exports), as random training crops or fixed validation cases.

Training may draw from several folders with weights (``DataSource``); a folder without a
validation split of its own can keep its held-out pairs (``is_heldout``) out of training.
"""
from __future__ import annotations

import hashlib
import math
import os
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from .perturb import synthesize_coarse

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


class DataError(ValueError):
    """Training data that cannot be used; the message names the file."""


@dataclass(frozen=True)
class Pair:
    name: str
    image: Path
    mask: Path


def is_heldout(name: str) -> bool:
    """Whether the pair ``name`` (the file stem) belongs to the fixed validation tenth of a data
    set that has no validation folder of its own (``shared/data/extra/*``).

    The one rule for it — training leaves these pairs out, benchmarks validate on them:
    ``int(sha1(name).hexdigest(), 16) % 10 == 0``.
    """
    return int(hashlib.sha1(name.encode()).hexdigest(), 16) % 10 == 0


def find_pairs(root: str | Path, *, check_sizes: bool = True) -> list[Pair]:
    """All image/mask pairs under ``root``; a clear error when there are none or they disagree.

    Images without a mask, and masks without an image, are reported (count and first names),
    never dropped silently.
    """
    root = Path(root)
    img_dir, mask_dir = root / "images", root / "masks"
    if not img_dir.is_dir() or not mask_dir.is_dir():
        raise DataError(f"{root} must contain 'images/' and 'masks/' folders")
    images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {img_dir}")
    pairs, orphans = [], []
    for img in images:
        mask = mask_dir / f"{img.stem}.png"
        (pairs if mask.is_file() else orphans).append(Pair(img.stem, img, mask) if mask.is_file() else img)
    if orphans:
        warnings.warn(f"{len(orphans)} of {len(images)} images in {img_dir} have no mask in {mask_dir} "
                      f"and are left out (first: {', '.join(p.name for p in orphans[:3])})", stacklevel=2)
    stems = {img.stem for img in images}
    lone_masks = sorted(p.name for p in mask_dir.iterdir()
                        if p.suffix.lower() == ".png" and p.stem not in stems)
    if lone_masks:
        warnings.warn(f"{len(lone_masks)} masks in {mask_dir} have no image in {img_dir} and are "
                      f"left out (first: {', '.join(lone_masks[:3])})", stacklevel=2)
    if not pairs:
        raise DataError(f"no image in {img_dir} has a matching mask (masks/NAME.png) in {mask_dir}")
    if check_sizes:
        for pair in pairs:
            isize, msize = _header_size(pair.image), _header_size(pair.mask)
            if isize != msize:
                raise DataError(f"mask {pair.mask} is {msize[0]}x{msize[1]} but image {pair.image} "
                                f"is {isize[0]}x{isize[1]}")
    return pairs


def _header_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as exc:  # PIL raises many types for broken files
        raise DataError(f"cannot read {path}: {exc}") from exc


def read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as exc:
        raise DataError(f"cannot decode image {path}: {exc}") from exc


def read_mask(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except Exception as exc:
        raise DataError(f"cannot decode mask {path}: {exc}") from exc
    if arr.ndim == 3:
        arr = arr[..., 0]
    return arr > (0 if arr.dtype == bool else 127)


def read_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    image, mask = read_image(pair.image), read_mask(pair.mask)
    if image.shape[:2] != mask.shape:
        raise DataError(f"mask {pair.mask} has shape {mask.shape}, image {pair.image} {image.shape[:2]}")
    return image, mask


def check_pairs(pairs: Sequence[Pair], what: str = "training", workers: int | None = None) -> None:
    """Decode every image and mask of ``pairs`` (and compare their sizes) now, so that a broken
    file stops a run before its first step, with one message that names every bad file
    (count, then the first few), instead of killing it when the loader reaches the file.
    """
    def problem(pair: Pair) -> str | None:
        try:
            read_pair(pair)
        except DataError as exc:
            return str(exc)
        return None

    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:  # PIL and zlib decode without the GIL
        problems = [p for p in pool.map(problem, pairs) if p is not None]
    if problems:
        shown = "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
        raise DataError(f"{len(problems)} of {len(pairs)} {what} pairs cannot be used, fix or "
                        f"remove them: {shown}")


@dataclass(frozen=True)
class DataSource:
    """One training folder, its share of the samples, and whether its held-out pairs
    (``is_heldout``) stay out of training."""
    root: Path
    weight: float = 1.0
    holdout: bool = False

    @classmethod
    def parse(cls, spec, holdout: bool = False) -> "DataSource":
        """A ``DataSource`` from a path, ``"DIR=WEIGHT"``, or a mapping with ``root`` and the
        optional ``weight`` and ``holdout`` (which defaults to ``holdout``)."""
        if isinstance(spec, DataSource):
            return spec
        if isinstance(spec, dict):
            unknown = set(spec) - {"root", "weight", "holdout"}
            if "root" not in spec or unknown:
                raise ValueError(f"a data entry needs 'root' and may have 'weight' and 'holdout'; "
                                 f"got {sorted(spec)}")
            root, weight = spec["root"], spec.get("weight", 1.0)
            holdout = bool(spec.get("holdout", holdout))
        else:
            root, weight = str(spec), 1.0
            head, sep, tail = root.rpartition("=")
            if sep and head and not Path(root).exists():
                try:
                    root, weight = head, float(tail)
                except ValueError:
                    pass
        try:
            weight = float(weight)
        except (TypeError, ValueError):
            raise ValueError(f"weight of training folder {root} must be a number, got {weight!r}") from None
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"weight of training folder {root} must be a positive number, got {weight}")
        return cls(Path(root), weight, holdout)


def _stable_seed(*parts) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


class TrainCrops(torch.utils.data.Dataset):
    """Random crops with flips, light colour jitter and a synthesised coarse mask.

    A sample is a pure function of (seed, epoch, image): index ``epoch * len(self) + i`` draws
    image ``i`` with epoch ``epoch``'s randomness, so a sampler picks fresh crops and coarse
    masks every epoch without any state in (possibly forked) worker processes.

    ``root`` is one folder or several (``DataSource`` specs); the pairs of all of them are
    numbered in order, ``groups`` holds each source's index range and ``weights`` its share of
    the samples (normalised), for ``training.trainer.MixedStepBatches``.
    ``identity_share`` of the coarse masks are near-identity (``perturb.near_identity_coarse``).
    """

    def __init__(self, root, crop: int = 224, coarse_mode: str = "mixed",
                 scale_range=(0.75, 1.25), seed: int = 0, lowres_share: float = 0.25,
                 identity_share: float = 0.0):
        specs = list(root) if isinstance(root, (list, tuple)) else [root]
        if not specs:
            raise DataError("no training folder given")
        self.sources = [DataSource.parse(s) for s in specs]
        self.pairs, self.groups = [], []
        for source in self.sources:
            pairs = find_pairs(source.root)
            if source.holdout:
                pairs = [p for p in pairs if not is_heldout(p.name)]
                if not pairs:
                    raise DataError(f"every pair in {source.root} is held out for validation")
            self.groups.append(range(len(self.pairs), len(self.pairs) + len(pairs)))
            self.pairs.extend(pairs)
        total = sum(s.weight for s in self.sources)
        self.weights = [s.weight / total for s in self.sources]
        self.lowres_share, self.identity_share = lowres_share, identity_share
        self.crop, self.coarse_mode, self.scale_range, self.seed = crop, coarse_mode, scale_range, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        epoch, index = divmod(int(index), len(self.pairs))
        rng = np.random.default_rng(_stable_seed(self.seed, self.epoch + epoch, index))
        image, gt = read_pair(self.pairs[index])
        image, gt = self._scale(image, gt, rng)
        image, gt = self._crop(image, gt, rng)
        if rng.random() < 0.5:
            image, gt = image[:, ::-1], gt[:, ::-1]
        image = _colour_jitter(image, rng)
        coarse = synthesize_coarse(np.ascontiguousarray(gt), rng, self.coarse_mode,
                                   self.lowres_share, self.identity_share)
        to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
        return (to_t(image).permute(2, 0, 1).float() / 255,
                to_t(coarse)[None].float(), to_t(gt)[None].float())

    def _scale(self, image, gt, rng):
        h, w = gt.shape
        s = rng.uniform(*self.scale_range)
        s = max(s, self.crop / min(h, w))  # the crop must fit
        nh, nw = max(self.crop, int(round(h * s))), max(self.crop, int(round(w * s)))
        return rescale_pair(image, gt, (nh, nw))

    def _crop(self, image, gt, rng, tries: int = 5):
        h, w = gt.shape
        c = self.crop
        for _ in range(tries):  # prefer crops that contain a boundary
            y, x = int(rng.integers(h - c + 1)), int(rng.integers(w - c + 1))
            window = gt[y:y + c, x:x + c]
            if 0.02 < window.mean() < 0.98:
                break
        return image[y:y + c, x:x + c], gt[y:y + c, x:x + c]


def rescale_pair(image: np.ndarray, gt: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize an image and its binary mask to ``size`` (h, w) with the same pixel-centre
    alignment: the mask is interpolated like the image and thresholded at ½.

    OpenCV's ``INTER_NEAREST`` is not centre-aligned: it moves a mask about 0.4 px down/right of
    its image at the scales of training, and a model trained on it learns that offset (moving
    the stage-1 model's output 1 px up/left cost 2.5 mBA points on val, down/right 4.5).
    """
    h, w = size
    if (h, w) == gt.shape:
        return image, gt
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    gt = cv2.resize(gt.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > 0.5
    return image, gt


def _colour_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    img = image.astype(np.float32)
    img = img * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20)  # contrast, brightness
    grey = img.mean(axis=2, keepdims=True)
    img = grey + (img - grey) * rng.uniform(0.8, 1.2)  # saturation
    return np.clip(img, 0, 255).astype(np.uint8)


class ValCases:
    """Whole validation images with fixed (seeded) coarse masks, one mode at a time.

    ``heldout=True`` takes only the held-out pairs (``is_heldout``) of a training folder.
    """

    def __init__(self, root: str | Path, mode: str = "perturb", seed: int = 0, limit: int | None = None,
                 heldout: bool = False):
        pairs = find_pairs(root)
        if heldout:
            pairs = [p for p in pairs if is_heldout(p.name)]
        self.pairs = pairs[:limit]
        self.mode, self.seed = mode, seed

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __getitem__(self, index: int):
        pair = self.pairs[index]
        image, gt = read_pair(pair)
        rng = np.random.default_rng(_stable_seed("val", self.seed, self.mode, pair.name))
        coarse = synthesize_coarse(gt, rng, self.mode)
        return pair.name, image, coarse, gt
