"""GrabCut baseline: improves a perturbed mask of an easy image; degenerate masks pass through."""
import cv2
import numpy as np
import pytest

from napari_airm.baselines import default_band, grabcut_refine
from napari_airm.metrics import iou


def disc_case(h=160, w=200, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    gt = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) * 0.3) ** 2
    image = np.where(gt[..., None], 200, 40) + rng.normal(0, 12, (h, w, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    # A rough annotation: a shifted, dilated disc with a bite taken out.
    coarse = np.roll(gt, (4, -5), axis=(0, 1)).astype(np.uint8)
    coarse = cv2.dilate(coarse, np.ones((5, 5), np.uint8)).astype(bool)
    coarse[int(h * 0.45):int(h * 0.55), int(w * 0.62):] = False
    return image, coarse, gt


def test_grabcut_improves_iou_on_a_disc():
    image, coarse, gt = disc_case()
    refined = grabcut_refine(image, coarse)
    assert refined.dtype == bool and refined.shape == gt.shape
    assert iou(coarse, gt) < 0.9
    assert iou(refined, gt) > iou(coarse, gt) + 0.08
    # A band wide enough to cover the annotation's errors recovers the disc.
    assert iou(grabcut_refine(image, coarse, band=10), gt) > 0.98


def test_grabcut_accepts_0_255_masks_float_images_and_band():
    image, coarse, gt = disc_case(seed=1)
    refined = grabcut_refine(image.astype(np.float32) / 255, coarse.astype(np.uint8) * 255,
                             iterations=3, band=6)
    assert iou(refined, gt) > iou(coarse, gt)


@pytest.mark.parametrize("value", [False, True])
def test_uniform_masks_are_returned_unchanged(value):
    image, _, _ = disc_case()
    coarse = np.full(image.shape[:2], value)
    out = grabcut_refine(image, coarse)
    assert out.dtype == bool and (out == value).all()


def test_only_the_band_box_is_processed():
    # A small object in a big image: pixels far from it keep the coarse value (background).
    image, coarse, gt = disc_case()
    big_img = np.zeros((1200, 1500, 3), np.uint8)
    big_mask = np.zeros((1200, 1500), bool)
    big_img[100:260, 1200:1400] = image
    big_mask[100:260, 1200:1400] = coarse
    out = grabcut_refine(big_img, big_mask, band=8)
    assert not out[400:].any() and not out[:, :1000].any()
    assert iou(out[100:260, 1200:1400], gt) > iou(coarse, gt)


def test_default_band_scales_with_size():
    assert default_band(10, 10) == 3
    assert default_band(3000, 4000) == 70


def test_shape_mismatch_is_a_value_error():
    with pytest.raises(ValueError, match="mask"):
        grabcut_refine(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 12), bool))


def test_many_small_objects_keep_a_definite_core():
    # Nuclei-like scene: the default band (1% of H+W) would swallow objects this small.
    rng = np.random.default_rng(3)
    h, w = 300, 400
    gt = np.zeros((h, w), bool)
    yy, xx = np.mgrid[:h, :w]
    for cy in range(25, h, 50):
        for cx in range(25, w, 50):
            gt |= (yy - cy) ** 2 + (xx - cx) ** 2 < 9 ** 2
    image = np.clip(np.where(gt[..., None], 170, 60) + rng.normal(0, 10, (h, w, 3)), 0, 255)
    coarse = cv2.dilate(gt.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    refined = grabcut_refine(image.astype(np.uint8), coarse)
    assert iou(refined, gt) > iou(coarse, gt)
