"""The tiled engine behind napari_airm.refine: geometry, laziness, labels, cancel, bad input."""
from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zarr

from napari_airm.engine.errors import Cancelled, InputError
from napari_airm.engine.refine import refine_array
from napari_airm.engine.schedule import make_plan
from napari_airm.model import build_model
from napari_airm.model.io import default_model_path, is_model_dir

CPU = torch.device("cpu")


def scene(h: int, w: int, seed: int = 0):
    """A textured blob on a gradient background, its mask, and a shifted, rounded coarse mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = np.arctan2(yy - h / 2, xx - w / 2)
    r = np.hypot((yy - h / 2) / h, (xx - w / 2) / w)
    gt = r < 0.3 + 0.04 * np.sin(7 * theta)
    coarse = np.hypot((yy - h / 2 - 6) / h, (xx - w / 2 + 4) / w) < 0.3
    img = np.where(gt[..., None], [200, 90, 60], [70, 120, 160]).astype(np.float32)
    img += rng.normal(0, 12, img.shape) + (xx / w * 40)[..., None]
    return np.clip(img, 0, 255).astype(np.uint8), gt, coarse


@pytest.fixture(scope="module")
def busy_model():
    """An untrained model whose decoder output is made large, so refinement really changes
    the mask and depends on the encoder: a strict test of the tiling geometry."""
    torch.manual_seed(0)
    model = build_model("airm-lite0", encoder_init=None).eval()
    with torch.no_grad():
        model.shared.weights[-1].mul_(2000)
    return model


@pytest.fixture(scope="module")
def bundled_model():
    if not is_model_dir(default_model_path()):
        pytest.skip("the bundled model is not built in this checkout")
    from napari_airm.api import load_model

    return load_model()


def test_plan_follows_crm_ratios_for_a_3k_image():
    plan = make_plan(2328, 3492)
    assert plan.global_pitch == 8  # encode 0.125
    assert plan.stage_pitches == (4, 2)  # encode 0.25, 0.5; decode 0.25, 0.5, 1
    assert make_plan(400, 300).stage_pitches == ()  # small images: one full-resolution pass


@pytest.fixture(scope="module")
def local_model(busy_model):
    """The busy model with its encoder features zeroed: what remains (coarse-mask resampling,
    bands, guide features, LIIF coordinates and the shared global weights) is purely local, so
    tiling must not change a single pixel: an exact test of the engine's geometry."""
    import copy

    model = copy.deepcopy(busy_model)
    with torch.no_grad():
        bn = model.encoder.fusion.fuse[1]
        bn.weight.zero_()
        bn.bias.zero_()
    return model


@pytest.mark.parametrize("tile, anchor, flips", [
    (64, False, 1), (128, False, 1), (192, False, 1), (64, True, 1), (128, True, 1),
    (192, True, 1), (128, False, 4)])
def test_tiling_geometry_is_exact(local_model, tile, anchor, flips):
    image, _, coarse = scene(448, 576)
    # global + two tile-local stages
    # the network's cascade alone (the trust region and the boundary solve have their own tests)
    kwargs = dict(device=CPU, global_side=96, anchor=anchor, flips=flips, reach=None,
                  solve=False)
    assert make_plan(448, 576, tile=tile, global_side=96).stage_pitches == (4, 2)
    whole = refine_array(image, coarse, local_model, tile=1024, **kwargs)
    tiled = refine_array(image, coarse, local_model, tile=tile, **kwargs)
    if anchor:  # the local model keeps a full-resolution mask it is given: read back in place
        np.testing.assert_array_equal(whole, coarse)
    else:  # it keeps the global stage's coarse map, which differs from the given mask
        assert (whole != coarse).mean() > 0.002, "the test model must actually change the mask"
    assert (tiled == whole).mean() >= 0.9999


@pytest.mark.parametrize("tile, passes", [(512, 1), (768, 1), (512, 2)])
def test_tiled_equals_untiled_with_the_bundled_model(bundled_model, tile, passes):
    """Tiles see less context than the whole image; with the real model the result must
    still agree on at least 99.9 % of the pixels."""
    image, _, coarse = scene(1536, 1536, seed=6)
    # global + stages 0.25 and 0.5, as for 3K photos
    kwargs = dict(device=CPU, global_side=192, passes=passes)
    whole = refine_array(image, coarse, bundled_model, tile=2048, **kwargs)
    tiled = refine_array(image, coarse, bundled_model, tile=tile, **kwargs)
    assert (tiled == whole).mean() >= 0.999


def test_lazy_inputs_and_zarr_output_equal_numpy(busy_model, tmp_path):
    image, _, coarse = scene(320, 400, seed=2)
    expected = refine_array(image, coarse, busy_model, device=CPU, tile=128, global_side=96)
    z_img = zarr.open_array(str(tmp_path / "img.zarr"), mode="w", shape=image.shape, chunks=(64, 64, 3),
                            dtype="uint8")
    z_img[...] = image
    out = zarr.open_array(str(tmp_path / "out.zarr"), mode="w", shape=coarse.shape, chunks=(128, 128),
                          dtype="bool")
    result = refine_array(z_img, da.from_array(coarse, chunks=64), busy_model, device=CPU, out=out,
                          tile=128, global_side=96)
    assert result is out
    np.testing.assert_array_equal(out[...], expected)


def test_mask_encodings_give_the_same_result(busy_model):
    image, _, coarse = scene(256, 256, seed=3)
    as_bool = refine_array(image, coarse, busy_model, device=CPU)
    as_255 = refine_array(image, coarse.astype(np.uint8) * 255, busy_model, device=CPU)
    as_01 = refine_array(image, coarse.astype(np.int32), busy_model, device=CPU)
    np.testing.assert_array_equal(as_bool, as_255)
    np.testing.assert_array_equal(as_bool, as_01)
    grey = refine_array(image.mean(axis=2).astype(np.uint8), coarse, busy_model, device=CPU)
    assert grey.shape == coarse.shape and grey.dtype == bool


def test_labels_are_refined_object_by_object(busy_model):
    image, _, coarse = scene(320, 480, seed=4)
    labels = np.zeros(coarse.shape, np.uint16)
    labels[coarse] = 7
    labels[10:60, 10:80] = 3  # a second object away from the first
    result = refine_array(image, labels, busy_model, device=CPU)
    assert result.dtype == labels.dtype
    assert set(np.unique(result)) <= {0, 3, 7}
    # each id stays near where it was: no id appears far from its own coarse object
    ys, xs = np.nonzero(result == 3)
    assert ys.max() < 120 and xs.max() < 160
    only7 = refine_array(image, labels, busy_model, device=CPU, labels=7)
    np.testing.assert_array_equal(only7 == 3, labels == 3)  # untouched
    with pytest.raises(InputError, match="do not occur"):
        refine_array(image, labels, busy_model, device=CPU, labels=5)


def test_a_second_pass_refines_the_first_result(busy_model):
    """On a frame the global stage decodes at full resolution, passes=2 is exactly refining
    the first result once more; progress counts both passes."""
    image, _, coarse = scene(160, 192, seed=7)
    network = dict(reach=None, solve=False)  # the network's passes alone
    once = refine_array(image, coarse, busy_model, device=CPU, **network)
    twice = refine_array(image, once, busy_model, device=CPU, **network)
    assert (once != coarse).any() and (twice != once).any(), "each pass must change the mask"
    seen = []
    two_passes = refine_array(image, coarse, busy_model, device=CPU, passes=2, **network,
                              progress=lambda done, total: seen.append((done, total)))
    np.testing.assert_array_equal(two_passes, twice)
    assert seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_second_pass_on_tiles_repeats_the_last_stage(busy_model):
    """With tile-local stages, the second pass re-runs only the last one, tile by tile."""
    image, _, coarse = scene(448, 576)
    kwargs = dict(device=CPU, global_side=96, tile=128)
    assert make_plan(448, 576, tile=128, global_side=96).stage_pitches == (4, 2)
    calls = {1: [], 2: []}
    once = refine_array(image, coarse, busy_model, **kwargs,
                        progress=lambda d, t: calls[1].append(t))
    two = refine_array(image, coarse, busy_model, passes=2, **kwargs,
                       progress=lambda d, t: calls[2].append(t))
    assert (two != once).any()
    assert calls[1][-1] == calls[2][-1]  # same tiles; the extra pass happens inside each


def test_anchoring_keeps_the_given_mask_except_where_earlier_stages_corrected_it():
    from napari_airm.engine.refine import ANCHOR_MARGIN, _anchor

    given = torch.zeros(1, 1, 80, 80)
    given[..., 10:50, 10:50] = 1
    prev = given.clone()
    prev[..., 10:50, 50] = 1  # the boundary moved by one pixel: not a correction
    prev[..., 25:35, 25:35] = 0  # a hole cut out: a correction
    prev[..., 60:70, 60:70] = 1  # a new blob, most of the comparison window: a correction
    prev_d = F.interpolate(prev, scale_factor=2, mode="nearest")
    given_d = F.interpolate(given, scale_factor=2, mode="nearest")
    out_e, out_d = _anchor(given, given_d, prev, prev_d, ANCHOR_MARGIN, 2)
    assert torch.equal(out_e[..., 10:50, 50], given[..., 10:50, 50])
    assert torch.equal(out_e[..., 25:35, 25:35], prev[..., 25:35, 25:35])
    assert torch.equal(out_e[..., 60:70, 60:70], prev[..., 60:70, 60:70])
    assert torch.equal(out_d[..., 120:140, 120:140], prev_d[..., 120:140, 120:140])
    assert torch.equal(out_d[..., 20:40, 100], given_d[..., 20:40, 100])


def test_a_good_mask_of_a_large_image_keeps_its_detail(bundled_model):
    """Later stages must not discard what the global stage cannot see: with the true mask as
    input, the 3-stage cascade must stay close to it, and much closer than CRM's cascade, which
    hands the fine stages only the global stage's 1/8-scale view of the mask."""
    from napari_airm.metrics import boundary_accuracy

    image, gt, _ = scene(1536, 1536, seed=8)
    kwargs = dict(device=CPU, global_side=192, reach=None, solve=False)  # the cascade alone
    anchored = refine_array(image, gt, bundled_model, **kwargs)
    crm = refine_array(image, gt, bundled_model, anchor=False, **kwargs)
    # stage-4 model: 0.942 / 0.99960 anchored, 0.870 / 0.99902 without
    assert boundary_accuracy(anchored, gt) >= 0.9
    assert boundary_accuracy(anchored, gt) - boundary_accuracy(crm, gt) >= 0.03
    assert (anchored == gt).mean() >= 0.9995


def test_flip_averaging_is_mirror_symmetric(busy_model):
    """With flips=N the result of a mirrored image is the mirrored result, exactly: every view
    is computed and averaged, whichever way the image comes in."""
    image, _, coarse = scene(160, 192, seed=9)

    network = dict(device=CPU, reach=None, solve=False)  # flip averaging is the network's

    def mirrored(axes, flips):
        f = lambda a: np.ascontiguousarray(np.flip(a, axes))  # noqa: E731
        return f(refine_array(f(image), f(coarse), busy_model, flips=flips, **network))

    plain = refine_array(image, coarse, busy_model, **network)
    assert (mirrored((1,), 1) != plain).any(), "the test model must not be symmetric by itself"
    two = refine_array(image, coarse, busy_model, flips=2, **network)
    np.testing.assert_array_equal(mirrored((1,), 2), two)
    assert (two != plain).any()
    four = refine_array(image, coarse, busy_model, flips=4, **network)
    for axes in ((0,), (1,), (0, 1)):
        np.testing.assert_array_equal(mirrored(axes, 4), four)


@pytest.mark.parametrize("flips", [0, 3, 8])
def test_flips_must_be_1_2_or_4(busy_model, flips):
    image, _, coarse = scene(64, 64)
    with pytest.raises(InputError, match="flips must be one of"):
        refine_array(image, coarse, busy_model, device=CPU, flips=flips)


@pytest.mark.parametrize("passes", [0, 1.5, -1])
def test_passes_must_be_a_positive_whole_number(busy_model, passes):
    image, _, coarse = scene(64, 64)
    with pytest.raises(InputError, match="passes must be a whole number"):
        refine_array(image, coarse, busy_model, device=CPU, passes=passes)


def test_cancel_raises_and_leaves_output_untouched(busy_model):
    image, _, coarse = scene(448, 576, seed=5)
    original = coarse.copy()
    out = np.zeros(coarse.shape, bool)
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 1  # let the global stage start, stop before any tile is written

    with pytest.raises(Cancelled):
        refine_array(image, coarse, busy_model, device=CPU, out=out, tile=128, global_side=96,
                     cancel=cancel)
    assert not out.any()
    np.testing.assert_array_equal(coarse, original)


def test_empty_and_full_masks_have_defined_results(busy_model):
    image, _, _ = scene(128, 160)
    empty = refine_array(image, np.zeros((128, 160), bool), busy_model, device=CPU)
    full = refine_array(image, np.ones((128, 160), np.uint8) * 255, busy_model, device=CPU)
    assert not empty.any() and full.all()


@pytest.mark.parametrize("image, mask, message", [
    (np.zeros((64, 64, 3), np.uint8), np.zeros((64, 65), bool), "must match"),
    (np.zeros((64, 64, 3), np.int32), np.zeros((64, 64), bool), "dtype int32 is not supported"),
    (np.zeros((4, 64, 64, 3), np.uint8), np.zeros((64, 64), bool), "3-D stacks|must be H×W"),
    (np.zeros((64, 64, 3), np.uint8), np.zeros((2, 64, 64), bool), "2-D"),
    (np.zeros((64, 64, 5), np.uint8), np.zeros((64, 64), bool), "must be H×W"),
    (np.full((64, 64, 3), 200.0), np.zeros((64, 64), bool), r"\[0, 1\]"),
    (np.zeros((64, 64, 3), np.uint8), np.full((64, 64), np.nan), "NaN"),
    (np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.complex64), "not supported"),
    (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), bool), "too small"),
])
def test_bad_input_is_a_clear_error(busy_model, image, mask, message):
    mask = mask.copy()
    if mask.dtype == bool and mask.shape == (64, 64):
        mask[20:40, 20:40] = True
    with pytest.raises(InputError, match=message):
        refine_array(image, mask, busy_model, device=CPU)


def test_wrong_out_shape_is_rejected(busy_model):
    image, _, coarse = scene(128, 128)
    with pytest.raises(InputError, match="out has shape"):
        refine_array(image, coarse, busy_model, device=CPU, out=np.zeros((10, 10), bool))


@pytest.mark.parametrize("global_side", [512, 128])  # one pass / a 3-stage cascade
def test_bundled_model_fast_matches_dense_on_real_images(bundled_model, duts_val_cases, global_side):
    """The fast path (band + tile skipping) scores within 0.2 IoU points of dense=True."""
    from napari_airm.metrics import SegmentationScores

    fast_s, dense_s = SegmentationScores(), SegmentationScores()
    for image, coarse, gt in duts_val_cases:
        kwargs = dict(device=CPU, global_side=global_side, tile=256)
        fast_s.add(refine_array(image, coarse, bundled_model, **kwargs), gt)
        dense_s.add(refine_array(image, coarse, bundled_model, dense=True, **kwargs), gt)
    assert abs(fast_s.iou - dense_s.iou) * 100 <= 0.2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_cuda_half_precision_matches_cpu(bundled_model):
    image, _, coarse = scene(1024, 1280, seed=7)
    cpu = refine_array(image, coarse, bundled_model, device=CPU, tile=512)
    gpu = refine_array(image, coarse, bundled_model, device=torch.device("cuda"), tile=512)
    assert (cpu == gpu).mean() >= 0.999
