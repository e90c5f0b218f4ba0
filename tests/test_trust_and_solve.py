"""Safe, boundary-exact refinement: the trust region (reach) and the full-resolution boundary
solve. A good mask must come back good, whatever the network thinks of it."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from napari_airm.engine.errors import Cancelled, InputError
from napari_airm.engine.reach import Reach, default_reach, resolve_reach
from napari_airm.engine.refine import refine_array
from napari_airm.engine.schedule import make_plan
from napari_airm.engine.settings import ROUGH_KEEP, RefineSettings
from napari_airm.engine.solve import SolveWeights, solve_boundary
from napari_airm.model import build_model

CPU = torch.device("cpu")


def distance_to_boundary(mask: np.ndarray) -> np.ndarray:
    """Per pixel: distance to the nearest pixel of the other label (1 on the boundary)."""
    fg = mask.astype(np.uint8)
    d_in = cv2.distanceTransform(fg, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    d_out = cv2.distanceTransform(1 - fg, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.where(fg > 0, d_in, d_out)


def blobs(h: int, w: int, seed: int = 0):
    """An image with a few colour blobs and a thin bar, the exact mask, and a sloppy mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    gt = np.zeros((h, w), bool)
    for cy, cx, r in ((0.3, 0.3, 0.18), (0.65, 0.7, 0.22), (0.75, 0.25, 0.08)):
        gt |= (yy - cy * h) ** 2 + (xx - cx * w) ** 2 < (r * min(h, w)) ** 2
    gt[int(0.5 * h):int(0.5 * h) + 4, int(0.1 * w):int(0.9 * w)] = True  # a 4-px bar
    img = np.where(gt[..., None], [200, 80, 70], [60, 110, 170]).astype(np.float32)
    img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
    sloppy = cv2.dilate(gt.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    sloppy[: h // 3, w // 2:] |= (yy[: h // 3, w // 2:] + xx[: h // 3, w // 2:]) % 97 < 30
    return img, gt, sloppy


@pytest.fixture(scope="module")
def bundled_model():
    from napari_airm.model.io import default_model_path, is_model_dir

    if not is_model_dir(default_model_path()):
        pytest.skip("the bundled model is not built in this checkout")
    from napari_airm.api import load_model

    return load_model()


@pytest.fixture(scope="module")
def wild_model():
    """An untrained model with a huge decoder output: it rewrites the mask everywhere, the
    way an off-domain network can. The trust region must hold against it."""
    torch.manual_seed(0)
    model = build_model("airm-lite0", encoder_init=None).eval()
    with torch.no_grad():
        model.shared.weights[-1].mul_(5000)
    return model


# ---------------------------------------------------------------------------- the reach


def test_reach_allows_exactly_the_pixels_within_reach_of_the_given_boundary():
    img, gt, _ = blobs(200, 240)
    allowed = Reach(6, None).allowed(gt)
    np.testing.assert_array_equal(allowed, distance_to_boundary(gt) <= 6)


def test_automatic_reach_keeps_a_core_of_thin_and_small_objects():
    h, w = 400, 600
    yy, xx = np.mgrid[:h, :w]
    big = (yy - 200) ** 2 + (xx - 150) ** 2 < 120 ** 2
    small = (yy - 80) ** 2 + (xx - 450) ** 2 < 10 ** 2
    bar = (yy >= 300) & (yy < 304) & (xx >= 350) & (xx < 580)  # 4 px thick: inradius 2
    given = big | small | bar
    reach = default_reach(h, w)
    assert reach.radius == 50  # a tenth of the mean side
    allowed = reach.allowed(given)
    assert not allowed[(distance_to_boundary(given) > reach.radius)].any()
    assert not allowed[301:303, 352:578].any(), "the bar keeps its two centre rows"
    assert not allowed[78:83, 448:453].any(), "a small object keeps its core"
    assert allowed[300, 350:580].all() and allowed[299, 350:580].all()  # ... and may move 1 px
    # a big object's boundary may move by the full reach, inwards and outwards
    assert allowed[200, 30 - reach.radius + 1:30 + reach.radius].all()


@pytest.mark.parametrize("bad", ["far", 0, -3, 2.5, True])
def test_a_bad_reach_is_a_clear_error(bad):
    with pytest.raises(InputError, match="reach"):
        resolve_reach(bad, 100, 100)


@pytest.mark.parametrize("tile", [64, 128, 1024])
def test_no_pixel_beyond_the_reach_changes_whatever_the_network_says(wild_model, tile):
    img, gt, sloppy = blobs(448, 576)
    assert make_plan(448, 576, tile=tile, global_side=96).stage_pitches == (4, 2) or tile == 1024
    far = distance_to_boundary(sloppy) > 5
    for solve in (False, True):
        out = refine_array(img, sloppy, wild_model, device=CPU, global_side=96, tile=tile,
                           reach=5, solve=solve)
        np.testing.assert_array_equal(out[far], sloppy[far])
        assert (out != sloppy).any(), "the test model must change something within reach"
    unbounded = refine_array(img, sloppy, wild_model, device=CPU, global_side=96, tile=tile,
                             reach=None, solve=False)
    assert (unbounded[far] != sloppy[far]).any(), "without a reach the test model goes far"


def test_reach_holds_object_by_object_in_label_images(wild_model):
    img, gt, sloppy = blobs(256, 320)
    labels = cv2.connectedComponents(sloppy.astype(np.uint8), connectivity=8)[1].astype(np.uint16)
    labels[labels > 0] += 40  # ids need not start at 1
    out = refine_array(img, labels, wild_model, device=CPU, reach=4)
    for label in np.unique(labels[labels > 0]):
        far = distance_to_boundary(labels == label) > 4
        np.testing.assert_array_equal((out == label)[far], (labels == label)[far])


# ---------------------------------------------------------------------------- the solve


def test_the_solve_snaps_a_blurred_boundary_onto_the_step_edge():
    """The network knows roughly where the edge is (a blurred belief centred on it), the user's
    mask is 2 px off: with a rough-mask pull the cut lands on the step edge; the default pull
    keeps the user's boundary, which the network is not sure enough to overrule."""
    h, w = 160, 200
    yy, xx = np.mgrid[:h, :w]
    truth = xx >= 100 + (yy // 40) * 3  # a staircase step edge
    rgb = np.where(truth[..., None], [0.75, 0.35, 0.3], [0.25, 0.4, 0.65]).astype(np.float32)
    rgb += np.random.default_rng(1).normal(0, 0.03, rgb.shape).astype(np.float32)
    prob = (1 / (1 + np.exp(-(xx - (100 + (yy // 40) * 3)) / 3.0))).astype(np.float32)
    given = xx >= 102 + (yy // 40) * 3  # the user's mask: 2 px off
    rgb = np.clip(rgb, 0, 1)
    allowed = Reach(6, None).allowed(given)
    rough = solve_boundary(rgb, prob, given, allowed, SolveWeights(given=ROUGH_KEEP))
    assert (rough != truth).mean() < 0.002
    assert (given != truth).mean() >= 0.01  # 2 px of every row
    np.testing.assert_array_equal(solve_boundary(rgb, prob, given, allowed), given)


def test_the_solve_keeps_pixels_outside_the_trust_region():
    rng = np.random.default_rng(0)
    rgb = rng.random((80, 90, 3)).astype(np.float32)
    given = np.zeros((80, 90), bool)
    given[20:60, 20:70] = True
    prob = rng.random((80, 90)).astype(np.float32)  # nonsense
    allowed = Reach(3, None).allowed(given)
    out = solve_boundary(rgb, prob, given, allowed)
    np.testing.assert_array_equal(out[~allowed], given[~allowed])


def test_tiles_agree_with_one_big_tile_with_the_default_pipeline(bundled_model):
    """The trust region is computed on a fixed lattice of blocks and agrees exactly; the cut's
    colour models are fitted per tile, so the decisions agree to a small share of pixels."""
    img, gt, sloppy = blobs(1536, 1536, seed=2)
    rough = cv2.dilate(gt.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    kwargs = dict(device=CPU, global_side=192)
    for tile in (256, 512):
        whole = refine_array(img, rough, bundled_model, tile=1536, **kwargs)
        tiled = refine_array(img, rough, bundled_model, tile=tile, **kwargs)
        assert (whole == tiled).mean() >= 0.999
    without_cut = dict(kwargs, solve=False)  # network + trust region: the network's own agreement
    whole = refine_array(img, sloppy, bundled_model, tile=1536, **without_cut)
    tiled = refine_array(img, sloppy, bundled_model, tile=256, **without_cut)
    assert (whole == tiled).mean() >= 0.9995


def test_a_near_perfect_mask_of_a_synthetic_scene_stays_near_perfect(bundled_model):
    img, gt, _ = blobs(1024, 1280, seed=3)
    near = cv2.resize(cv2.resize(gt.astype(np.float32), (320, 256), interpolation=cv2.INTER_AREA),
                      (1280, 1024), interpolation=cv2.INTER_LINEAR) > 0.5
    for coarse in (gt, near):
        out = refine_array(img, coarse, bundled_model, device=CPU)
        iou = (out & gt).sum() / (out | gt).sum()
        assert iou >= 0.995


def test_cancel_between_tiles_leaves_the_input_and_unwritten_tiles_untouched(bundled_model):
    img, _, sloppy = blobs(512, 512)
    original = sloppy.copy()
    kwargs = dict(device=CPU, tile=128, global_side=96)
    full = refine_array(img, sloppy, bundled_model, **kwargs)
    out = np.full((512, 512), 7, np.uint8)
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 6

    with pytest.raises(Cancelled):
        refine_array(img, sloppy, bundled_model, out=out, cancel=cancel, **kwargs)
    np.testing.assert_array_equal(sloppy, original)
    untouched = 0
    for y in range(0, 512, 128):
        for x in range(0, 512, 128):
            block = out[y:y + 128, x:x + 128]
            if (block == 7).all():
                untouched += 1
            else:  # a tile is written whole, with its final values, or not at all
                np.testing.assert_array_equal(block, full[y:y + 128, x:x + 128])
    assert untouched > 0


def test_settings_carry_every_option_and_refuse_unknown_ones():
    s = RefineSettings().replace(reach=12, tile=512)
    assert (s.reach, s.tile, s.solve) == (12, 512, True)
    with pytest.raises(InputError, match="unknown refinement option"):
        RefineSettings().replace(tiles=3)
    with pytest.raises(InputError, match="tile"):
        RefineSettings(tile=100)


def test_a_network_out_of_its_domain_is_not_asked_and_the_mask_is_kept(wild_model, monkeypatch):
    """When the global stage's mask disagrees with the given one as a whole (network trust 0,
    e.g. HRF vessels for a photo model), the tile stages are skipped, the user is told, and the
    given mask comes back (the cut keeps it: colour alone cannot outweigh the pull)."""
    from napari_airm.engine import refine as engine
    from napari_airm.engine.solve import network_trust

    img, gt, sloppy = blobs(448, 576)
    assert network_trust(np.zeros_like(gt), gt) == 0.0 and network_trust(gt, gt) == 1.0
    monkeypatch.setattr(engine, "network_trust", lambda net, given: 0.0)
    stages = []
    real_stage = engine.BinaryRefiner._stage
    monkeypatch.setattr(engine.BinaryRefiner, "_stage",
                        lambda self, *a, **k: stages.append(1) or real_stage(self, *a, **k))
    with pytest.warns(UserWarning, match="disagrees with the given mask"):
        out = refine_array(img, sloppy, wild_model, device=CPU, global_side=96, tile=128)
    assert not stages
    np.testing.assert_array_equal(out, sloppy)


def _disc_scene(radius: float = 60.0, size: int = 200):
    yy, xx = np.mgrid[:size, :size]
    r2 = (yy - size / 2) ** 2 + (xx - size / 2) ** 2
    truth = r2 < radius ** 2
    rgb = np.where(truth[..., None], [0.8, 0.3, 0.2], [0.2, 0.4, 0.7]).astype(np.float32)
    rgb = np.clip(rgb + np.random.default_rng(0).normal(0, 0.03, rgb.shape), 0, 1).astype(np.float32)
    return rgb, truth, r2


def test_edge_support_tells_a_boundary_on_the_edge_from_one_beside_it():
    """The pull to the given mask follows the image: a given boundary on the step edge keeps it
    (support 1 against a network boundary a pixel beside it), one 2 px off the edge — where the
    network's boundary lies — does not."""
    from napari_airm.engine.solve import _near_boundary, edge_support

    rgb, truth, r2 = _disc_scene()
    on_edge = edge_support(rgb, truth, 3, proposal=r2 < 61 ** 2)
    beside = edge_support(rgb, r2 < 62 ** 2, 3, proposal=truth)
    assert on_edge[_near_boundary(truth, 1)].min() > 0.95
    assert beside[_near_boundary(r2 < 62 ** 2, 1)].mean() < 0.45
    assert beside[_near_boundary(r2 < 62 ** 2, 1)].max() < 0.6
    flat = np.full_like(rgb, 0.5)  # no edge anywhere: no reason to move the given boundary
    assert edge_support(flat, r2 < 62 ** 2, 3, proposal=truth).min() == 1.0


def test_the_pull_is_uniform_without_edge_and_taper_and_fades_with_taper():
    from napari_airm.engine.solve import given_pull

    rgb, truth, r2 = _disc_scene()
    plain = given_pull(rgb, truth, SolveWeights(given=6.0, edge=0.0, taper=None))
    assert np.all(plain == 6.0)
    faded = given_pull(rgb, truth, SolveWeights(given=6.0, edge=0.0, taper=2.0))
    d = distance_to_boundary(truth)
    assert np.all(faded[d <= 1] == 6.0) and np.all(faded[d >= 3] == 0.0)


def test_a_gated_taper_keeps_the_pull_on_a_boundary_that_lies_on_the_edge(monkeypatch):
    """With TAPER_GATE the pull fades away from the given boundary only where that boundary is
    off the image's edge: a correct boundary keeps its full pull 5 px out (the network may not
    redraw it), a boundary 4 px inside the edge loses it at the edge."""
    from napari_airm.engine import solve

    monkeypatch.setattr(solve, "TAPER_GATE", True)
    monkeypatch.setattr(solve, "EDGE_RIVAL", "nearby")
    rgb, truth, r2 = _disc_scene()
    weights = SolveWeights(given=6.0, edge=0.0, taper=2.0)
    ring = (r2 > 65 ** 2) & (r2 < 66 ** 2)  # ~5 px outside the true edge
    on_edge = solve.given_pull(rgb, truth, weights)
    assert on_edge[ring].mean() > 4.5
    off = r2 < 56 ** 2  # the given boundary 4 px inside the edge
    ring_in = (r2 > 60 ** 2) & (r2 < 61 ** 2)  # the true edge, ~4.5 px outside the given boundary
    assert solve.given_pull(rgb, off, weights)[ring_in].mean() < 1.0
