"""IoU and mBA against hand-computed values and an independent implementation.

mBA must be computed exactly as CascadePSP / CRM / AIRM compute it (DESIGN.md §5), otherwise our
numbers cannot be compared with published ones.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage.morphology import disk

from napari_airm.metrics import (SegmentationScores, as_binary, boundary_accuracies,
                                 boundary_accuracy, boundary_radii, ellipse_kernel, iou)


def square(size=20, top=5, left=5, side=10) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[top:top + side, left:left + side] = True
    return m


# --------------------------------------------------------------------------------------------
# hand-checked cases
# --------------------------------------------------------------------------------------------
def test_iou_of_square_shifted_by_one_pixel():
    gt = square()                    # rows 5..14, cols 5..14: 100 px
    pred = square(left=6)            # rows 5..14, cols 6..15: 100 px
    # intersection: rows 5..14 x cols 6..14 = 10 * 9 = 90
    # union: 100 + 100 - 90 = 110
    assert iou(pred, gt) == pytest.approx(90 / 110)
    assert iou(gt, pred) == pytest.approx(90 / 110)  # symmetric


def test_mba_of_square_shifted_by_one_pixel():
    gt, pred = square(), square(left=6)
    # 20x20 image: (H+W)/300 = 0.133, so every r_i = 1 + int(negative > -1) = 1.
    # r = 1: OpenCV's 3x3 ellipse is the cross. Dilation adds one pixel on each side of the
    # square, no corners: 100 + 4*10 = 140 px. Erosion keeps rows/cols 6..13: 64 px.
    # boundary region = 140 - 64 = 76 px (outer ring 40 + the square's own border 36).
    # Wrong pixels in it: GT column 5 (10 px, GT 1, pred 0) and column 15 (10 px, GT 0, pred 1).
    # accuracy = (76 - 20) / 76 for each of the 5 radii, so mBA = 56/76.
    assert boundary_accuracies(pred, gt) == pytest.approx([56 / 76] * 5)
    assert boundary_accuracy(pred, gt) == pytest.approx(56 / 76)


def test_perfect_prediction():
    gt = square()
    assert iou(gt, gt) == 1.0
    assert boundary_accuracy(gt.copy(), gt) == 1.0


def test_empty_prediction_and_empty_ground_truth_is_perfect():
    empty = np.zeros((20, 20), bool)
    assert iou(empty, empty) == 1.0
    # no GT boundary at all: every region is empty and counts as accuracy 1
    assert boundary_accuracy(empty, empty) == 1.0


def test_empty_prediction_against_an_object():
    gt = square()
    empty = np.zeros_like(gt)
    assert iou(empty, gt) == 0.0
    # region = 76 px (see above); the empty prediction is right on the outer ring (40 px,
    # GT 0) and wrong on the square's border (36 px, GT 1): 40/76
    assert boundary_accuracy(empty, gt) == pytest.approx(40 / 76)


def test_full_prediction_against_an_object():
    gt = square()
    full = np.ones_like(gt)
    # intersection 100, union 400
    assert iou(full, gt) == pytest.approx(100 / 400)
    # right on the 36 border pixels, wrong on the 40 outer-ring pixels
    assert boundary_accuracy(full, gt) == pytest.approx(36 / 76)


# --------------------------------------------------------------------------------------------
# radii
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("height,width,expected", [
    (20, 20, [1, 1, 1, 1, 1]),          # (H+W)/300 = 0.13 < 1: int() truncates towards 0
    (150, 150, [1, 1, 1, 1, 1]),        # max radius exactly 1
    (600, 900, [1, 1, 2, 3, 4]),        # max 5: 1 + int(0.8 i) = 1, 1, 2, 3, 4
    (1080, 1920, [1, 2, 4, 6, 8]),      # max 10: 1 + int(1.8 i) = 1, 2, 4, 6, 8
    (3000, 4500, [1, 5, 10, 15, 20]),   # max 25: 1 + int(4.8 i) = 1, 5, 10, 15, 20
])
def test_boundary_radii_by_hand(height, width, expected):
    assert boundary_radii(height, width) == expected


@pytest.mark.parametrize("height,width", [(20, 20), (299, 301), (400, 300), (2328, 3492),
                                          (12345, 23456)])
def test_boundary_radii_follow_cascadepsp_formula(height, width):
    max_radius = (height + width) / 300
    assert boundary_radii(height, width) == [1 + int((max_radius - 1) / 5 * i) for i in range(5)]


# --------------------------------------------------------------------------------------------
# the elliptical kernel and an independent mBA
# --------------------------------------------------------------------------------------------
def opencv_ellipse(radius: int) -> np.ndarray:
    """cv::getStructuringElement(MORPH_ELLIPSE, (2r+1, 2r+1)) re-implemented from OpenCV's
    source (modules/imgproc/src/morph.dispatch.cpp): with r = c = radius and inv_r2 = 1/r², row
    i (dy = i - r) is set on columns [c - dx, c + dx] where
    dx = saturate_cast<int>(c * sqrt((r² - dy²) * inv_r2)), i.e. rounded to nearest (cvRound),
    not truncated.
    """
    size = 2 * radius + 1
    kernel = np.zeros((size, size), np.uint8)
    inv_r2 = 1.0 / (radius * radius)
    for i in range(size):
        dy = i - radius
        dx = int(np.rint(radius * np.sqrt((radius * radius - dy * dy) * inv_r2)))
        kernel[i, max(radius - dx, 0):min(radius + dx + 1, size)] = 1
    return kernel


@pytest.mark.parametrize("radius", range(1, 13))
def test_numpy_ellipse_equals_opencv(radius):
    ours = opencv_ellipse(radius)
    np.testing.assert_array_equal(
        ours, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)))
    np.testing.assert_array_equal(ellipse_kernel(radius), ours)


def test_opencv_ellipse_is_not_skimage_disk():
    # r = 1: both are the 3x3 cross
    np.testing.assert_array_equal(opencv_ellipse(1), disk(1))
    # r = 2: row dy = ±1 has half-width round(sqrt(4 - 1)) = round(1.73) = 2 in OpenCV, but
    # disk keeps only x² + y² <= r², i.e. |x| <= 1.73 -> 1. The ellipse is fatter: 17 vs 13 px.
    assert opencv_ellipse(2).sum() == 17 and disk(2).sum() == 13
    for r in range(2, 13):  # rounding instead of truncation: OpenCV's kernel is a strict superset
        e, d = opencv_ellipse(r).astype(bool), disk(r).astype(bool)
        assert (e & d).sum() == d.sum() and e.sum() > d.sum(), r


def reference_boundary_accuracies(pred: np.ndarray, gt: np.ndarray) -> list[float]:
    """mBA per radius written out plainly: shifts for dilation/erosion, no OpenCV morphology.

    Pixels outside the image take no part (OpenCV's default border value for dilate/erode):
    pad with 0 for the dilation (max) and with 1 for the erosion (min).
    """
    h, w = gt.shape
    max_radius = (h + w) / 300
    accs = []
    for i in range(5):
        r = 1 + int((max_radius - 1) / 5 * i)
        kernel = opencv_ellipse(r)
        padded0 = np.pad(gt, r, constant_values=False)
        padded1 = np.pad(gt, r, constant_values=True)
        dil = np.zeros_like(gt)
        ero = np.ones_like(gt)
        for ky, kx in zip(*np.nonzero(kernel)):
            dil |= padded0[ky:ky + h, kx:kx + w]
            ero &= padded1[ky:ky + h, kx:kx + w]
        region = dil & ~ero
        n = region.sum()
        accs.append(1.0 if n == 0 else float((pred[region] == gt[region]).sum()) / n)
    return accs


def random_blobs(rng, height, width, n=6) -> np.ndarray:
    """A few random discs and rectangles, some touching the image border."""
    m = np.zeros((height, width), bool)
    yy, xx = np.mgrid[:height, :width]
    for _ in range(n):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        r = rng.uniform(0.05, 0.3) * min(height, width)
        m ^= (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
    m[: height // 5, : width // 7] = True  # a corner block: the border handling matters
    return m


@pytest.mark.parametrize("height,width", [(40, 60), (301, 299), (600, 900), (900, 1200)])
def test_boundary_accuracy_matches_independent_implementation(height, width):
    rng = np.random.default_rng(height * 7 + width)
    gt = random_blobs(rng, height, width)
    pred = random_blobs(rng, height, width)
    pred[rng.random(pred.shape) < 0.02] ^= True  # plus salt-and-pepper errors
    radii = boundary_radii(height, width)
    if height >= 600:
        assert max(radii) > 2  # the ellipse/disk difference is exercised
    expected = reference_boundary_accuracies(pred, gt)
    assert boundary_accuracies(pred, gt) == pytest.approx(expected, abs=1e-12)
    assert boundary_accuracy(pred, gt) == pytest.approx(np.mean(expected), abs=1e-12)


def test_skimage_disk_would_give_different_numbers():
    """Documenting why the kernel matters: a disk(r) band is thinner, so the score changes."""
    rng = np.random.default_rng(3)
    gt = random_blobs(rng, 600, 900)
    pred = np.roll(gt, 2, axis=1)
    r = boundary_radii(600, 900)[-1]  # 4
    g8 = gt.astype(np.uint8)
    band_ellipse = cv2.morphologyEx(g8, cv2.MORPH_GRADIENT, opencv_ellipse(r)) > 0
    band_disk = cv2.morphologyEx(g8, cv2.MORPH_GRADIENT, disk(r).astype(np.uint8)) > 0
    assert band_ellipse.sum() > band_disk.sum()
    acc = lambda band: (pred[band] == gt[band]).mean()
    assert boundary_accuracies(pred, gt)[-1] == pytest.approx(acc(band_ellipse))
    assert abs(acc(band_ellipse) - acc(band_disk)) > 1e-3


# --------------------------------------------------------------------------------------------
# dataset aggregation
# --------------------------------------------------------------------------------------------
def test_dataset_iou_is_total_intersection_over_total_union():
    # image A, 10x10: GT = rows 0..4 (50 px), prediction = rows 0..4, cols 0..4 (25 px)
    gt_a = np.zeros((10, 10), bool)
    gt_a[:5] = True
    pred_a = np.zeros((10, 10), bool)
    pred_a[:5, :5] = True
    # image B, 20x20: GT = 10x10 square (100 px), predicted exactly
    gt_b = square()
    scores = SegmentationScores()
    row_a = scores.add(pred_a, gt_a, "a")
    row_b = scores.add(gt_b.copy(), gt_b, "b")
    assert row_a["iou"] == pytest.approx(25 / 50) and row_a["name"] == "a"
    assert row_b["iou"] == 1.0 and row_b["mba"] == 1.0
    # dataset IoU: (25 + 100) / (50 + 100) = 0.8333..., not the mean of 0.5 and 1.0
    assert scores.iou == pytest.approx(125 / 150)
    assert scores.mean_image_iou == pytest.approx(0.75)
    # mBA: mean over images of each image's mean over radii
    assert scores.mba == pytest.approx((boundary_accuracy(pred_a, gt_a) + 1.0) / 2)
    summary = scores.summary()
    assert summary["images"] == 2 and summary["iou"] == pytest.approx(125 / 150)


def test_empty_dataset_scores():
    scores = SegmentationScores()
    assert scores.iou == 1.0  # nothing to get wrong
    assert np.isnan(scores.mba) and scores.summary()["images"] == 0


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------
def test_bool_01_and_0255_encodings_agree():
    rng = np.random.default_rng(0)
    gt = random_blobs(rng, 64, 80)
    pred = np.roll(gt, 3, axis=0)
    results = []
    for enc in (lambda m: m, lambda m: m.astype(np.int64), lambda m: m.astype(np.uint8) * 255,
                lambda m: m.astype(np.float32)):
        p, g = enc(pred), enc(gt)
        results.append((iou(p, g), boundary_accuracies(p, g)))
    assert all(r == results[0] for r in results)
    assert 0 < results[0][0] < 1


def test_as_binary_thresholds_correctly():
    np.testing.assert_array_equal(as_binary(np.array([[0, 255]], np.uint8)), [[False, True]])
    np.testing.assert_array_equal(as_binary(np.array([[1, 0]])), [[True, False]])
    # an all-zero uint8 mask is empty whichever encoding was meant
    assert not as_binary(np.zeros((3, 3), np.uint8)).any()


@pytest.mark.parametrize("pred,gt,match", [
    (np.zeros((10, 10)), np.zeros((10, 12)), r"prediction shape \(10, 10\) differs from ground "
                                               r"truth shape \(10, 12\)"),
    (np.zeros((2, 10, 10)), np.zeros((10, 10)), r"prediction must be a 2-D array.*\(2, 10, 10\)"),
    (np.zeros((10, 10)), np.zeros((10, 10, 3), np.uint8), r"ground truth must be a 2-D array"),
    (np.full((4, 4), 0.5), np.zeros((4, 4)), r"prediction must be binary.*0\.5.*threshold"),
    (np.zeros((4, 4)), np.array([[np.nan, 0], [1, 0]]), r"ground truth contains NaN"),
    (np.zeros((0, 0)), np.zeros((0, 0)), r"prediction is empty"),
    (np.arange(4).reshape(2, 2), np.zeros((2, 2)), r"prediction must be binary.*\[0, 1, 2, 3\]"),
    (np.array([["a", "b"]]), np.zeros((1, 2)), r"prediction has unsupported dtype"),
    (np.array([[0, 1, 255]], np.uint8), np.zeros((1, 3)), r"must be binary.*\[0, 1, 255\]"),
])
def test_bad_input_is_a_clear_value_error(pred, gt, match):
    for fn in (iou, boundary_accuracy, lambda p, g: SegmentationScores().add(p, g)):
        with pytest.raises(ValueError, match=match):
            fn(pred, gt)


def test_bad_input_does_not_change_dataset_totals():
    scores = SegmentationScores()
    scores.add(square(), square())
    with pytest.raises(ValueError):
        scores.add(np.zeros((5, 5)), np.zeros((6, 6)))
    assert scores.summary()["images"] == 1 and scores.iou == 1.0
