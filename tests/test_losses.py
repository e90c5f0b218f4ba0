"""Training losses (paper eq. 7, 8 and 11) against values worked out by hand."""
from __future__ import annotations

import math

import pytest
import torch

from napari_airm.losses import LossWeights, airmf_loss, gradient_loss, sobel_magnitude, total_loss
from napari_airm.model.affinity import affinity_loss, affinity_targets


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def step_edge(h=6, w=8) -> torch.Tensor:
    """(1,1,h,w): columns 0..3 are 0, columns 4..7 are 1 (a vertical edge)."""
    x = torch.zeros(1, 1, h, w)
    x[..., w // 2:] = 1
    return x


# --------------------------------------------------------------------------------------------
# Sobel and the gradient loss
# --------------------------------------------------------------------------------------------
def test_sobel_of_a_constant_map_is_zero():
    for value in (0.0, 0.3, 1.0):
        mag = sobel_magnitude(torch.full((2, 1, 7, 9), value))
        assert mag.shape == (2, 1, 7, 9)
        assert mag.max() < 1e-3  # sqrt(eps) only; replicate padding: no border artefact


def test_sobel_of_a_step_edge():
    # x-kernel rows weighted 1,2,1 on (x[c+1] - x[c-1]): at columns 3 and 4 that difference is 1,
    # so |G| = (1 + 2 + 1) * 1 = 4 on both columns (every row: replicate padding), 0 elsewhere.
    mag = sobel_magnitude(step_edge())[0, 0]
    expected = torch.zeros(6, 8)
    expected[:, 3:5] = 4.0
    torch.testing.assert_close(mag, expected, atol=1e-3, rtol=0)
    # a horizontal edge is the same, transposed (the y kernel is the x kernel's transpose)
    torch.testing.assert_close(sobel_magnitude(step_edge().transpose(-1, -2))[0, 0], expected.t(),
                               atol=1e-3, rtol=0)


def test_gradient_loss_of_a_missed_edge():
    # prediction flat (|G| = 0), GT a step: |G_gt| = 4 on 2 of 8 columns, mean |0 - |G_gt|| = 1
    assert gradient_loss(torch.zeros(1, 1, 6, 8), step_edge()).item() == pytest.approx(1.0, abs=1e-3)
    # an edge in the right place costs nothing, one column off costs on 2 of 8 columns
    assert gradient_loss(step_edge(), step_edge()).item() == pytest.approx(0.0, abs=1e-6)
    shifted = torch.roll(step_edge(), 1, dims=-1)
    shifted[..., 0] = 0  # edge at column 5 now: |G| = 4 on columns 4 and 5
    # |difference| = 4 at column 3 and at column 5: 2 columns * 4 / 8 columns = 1.0
    assert gradient_loss(shifted, step_edge()).item() == pytest.approx(1.0, abs=1e-3)


# --------------------------------------------------------------------------------------------
# the decoder loss L_AIRMF
# --------------------------------------------------------------------------------------------
def test_confident_correct_logits_cost_almost_nothing():
    gt = step_edge()
    total, parts = airmf_loss(gt * 40 - 20, gt)  # logits ±20 on the right side
    assert total.item() < 1e-6
    assert all(v.item() < 1e-6 for v in parts.values())


def test_airmf_parts_by_hand():
    gt = step_edge()
    total, parts = airmf_loss(torch.zeros_like(gt), gt)  # p = 0.5 everywhere
    # L1 = |0.5 - 0/1| = 0.5; L2 = 0.25; BCE = -log 0.5 = ln 2; grad = 1.0 (flat vs step edge)
    assert parts["l1"].item() == pytest.approx(0.5)
    assert parts["l2"].item() == pytest.approx(0.25)
    assert parts["bce"].item() == pytest.approx(math.log(2))
    assert parts["grad"].item() == pytest.approx(1.0, abs=1e-3)
    # 0.2*0.5 + 0.2*0.25 + 0.3*ln2 + 0.4*1.0 = 0.1 + 0.05 + 0.20794 + 0.4 = 0.75794
    assert total.item() == pytest.approx(0.75794, abs=1e-3)


def test_confidently_wrong_costs_more_than_unsure():
    gt = step_edge()
    unsure, _ = airmf_loss(torch.zeros_like(gt), gt)
    wrong, parts = airmf_loss(20 - gt * 40, gt)  # inverted
    assert wrong > unsure
    assert parts["l1"].item() == pytest.approx(1.0, abs=1e-6)
    assert parts["bce"].item() == pytest.approx(20.0, abs=1e-3)  # -log sigmoid(-20) ≈ 20


def test_airmf_loss_rejects_shape_mismatch():
    with pytest.raises(ValueError, match=r"logits \(1, 1, 4, 4\) and target \(1, 1, 4, 5\) differ"):
        airmf_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))


# --------------------------------------------------------------------------------------------
# affinity loss (eq. 8)
# --------------------------------------------------------------------------------------------
def test_affinity_targets_on_a_2x2_grid():
    gt = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).view(1, 1, 2, 2)  # left column foreground
    labels, valid = affinity_targets(gt, (2, 2), radius=1)
    # cells a=(0,0) b=(0,1) c=(1,0) d=(1,1); radius 1 keeps the 4-neighbours only
    # (no self pairs, no diagonals at distance sqrt 2)
    expected_valid = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 1], [1, 0, 0, 1], [0, 1, 1, 0]]).bool()
    assert torch.equal(valid, expected_valid)
    # same class: a~c and b~d
    expected_labels = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]]).bool()
    assert torch.equal(labels[0], expected_labels)


def test_affinity_loss_on_a_2x2_grid_by_hand():
    gt = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).view(1, 1, 2, 2)
    labels, valid = affinity_targets(gt, (2, 2), radius=1)
    pos, neg = labels[0] & valid, ~labels[0] & valid
    assert pos.sum() == 4 and neg.sum() == 4  # a-c, c-a, b-d, d-b / a-b, b-a, c-d, d-c
    logits = torch.zeros(1, 4, 4)
    logits[0][pos] = logit(0.8)
    logits[0][neg] = logit(0.25)
    # pairs that must not count: self pairs (same class) wildly wrong, diagonals too
    logits[0][torch.eye(4, dtype=torch.bool)] = -30.0
    logits[0, 0, 3] = logits[0, 3, 0] = 30.0  # a-d: different classes, distance sqrt 2 > 1
    # positives: -log 0.8 = 0.22314; negatives: -log(1 - 0.25) = 0.28768; sum 0.51083
    loss = affinity_loss(logits, gt, (2, 2), radius=1)
    assert loss.item() == pytest.approx(-math.log(0.8) - math.log(0.75), abs=1e-5)


def test_affinity_terms_are_normalised_by_their_own_pair_count():
    # 1x3 grid, classes [1, 1, 0], radius 2: positives 0-1, 1-0 (2 pairs);
    # negatives 1-2, 2-1 (distance 1) and 0-2, 2-0 (distance 2): 4 pairs
    gt = torch.tensor([1.0, 1.0, 0.0]).view(1, 1, 1, 3)
    logits = torch.zeros(1, 3, 3)
    logits[0, 0, 1] = logits[0, 1, 0] = logit(0.8)      # -log 0.8 = 0.22314 each
    logits[0, 1, 2] = logits[0, 2, 1] = 0.0             # -log 0.5 = 0.69315 each
    logits[0, 0, 2] = logits[0, 2, 0] = logit(0.1)      # -log 0.9 = 0.10536 each
    loss = affinity_loss(logits, gt, (1, 3), radius=2)
    # mean over positives + mean over negatives = 0.22314 + (0.69315 + 0.10536) / 2 = 0.62240
    # (one mean over all 6 pairs would be 0.34055)
    assert loss.item() == pytest.approx(0.22314 + (0.69315 + 0.10536) / 2, abs=1e-4)


def test_empty_positive_set_contributes_zero():
    gt = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)  # the only pair is cross-class
    logits = torch.full((1, 2, 2), logit(0.25))
    logits[0, 0, 0] = logits[0, 1, 1] = -30.0  # self pairs are never counted
    loss = affinity_loss(logits, gt, (1, 2), radius=1)
    assert loss.item() == pytest.approx(-math.log(0.75), abs=1e-5)  # negatives only


def test_empty_negative_set_contributes_zero():
    gt = torch.ones(1, 1, 2, 2)  # one class everywhere
    logits = torch.full((1, 4, 4), logit(0.8))
    loss = affinity_loss(logits, gt, (2, 2), radius=1)
    assert loss.item() == pytest.approx(-math.log(0.8), abs=1e-5)  # positives only


def test_no_pairs_in_radius_gives_zero():
    gt = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    assert affinity_loss(torch.zeros(1, 2, 2), gt, (1, 2), radius=0.5).item() == 0.0


def test_affinity_grid_is_the_area_downsampled_gt():
    # an 8x8 GT on a 2x2 grid: each cell is the majority (area mean > 0.5) of its 4x4 block
    gt = torch.zeros(1, 1, 8, 8)
    gt[..., :4, :4] = 1          # block (0,0) full
    gt[..., :2, 4:] = 1          # block (0,1) half (not > 0.5)
    gt[..., 4:, :4] = 1
    gt[..., 4:5, :4] = 0         # block (1,0) 3/4 full
    labels, _ = affinity_targets(gt, (2, 2), radius=1)
    # cells: (0,0)=1, (0,1)=0, (1,0)=1, (1,1)=0
    assert labels[0, 0, 2] and labels[0, 1, 3] and not labels[0, 0, 1]


# --------------------------------------------------------------------------------------------
# the total (eq. 11)
# --------------------------------------------------------------------------------------------
def test_total_loss_combines_halves_by_hand():
    gt = step_edge()
    aff_gt = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    total, parts = total_loss(torch.zeros_like(gt), gt, torch.zeros(1, 2, 2), aff_gt, (1, 2), radius=1)
    # L_AIRMF = 0.75794 (above); L_aff = -log(1 - 0.5) = ln 2 (one negative pair kind only)
    # L = 0.5 * 0.75794 + 0.5 * 0.69315 = 0.72554
    assert parts["aff"].item() == pytest.approx(math.log(2), abs=1e-5)
    assert parts["airmf"].item() == pytest.approx(0.75794, abs=1e-3)
    assert total.item() == pytest.approx(0.5 * 0.75794 + 0.5 * math.log(2), abs=1e-3)
    assert parts["total"].item() == pytest.approx(total.item())
    assert not any(v.requires_grad for v in parts.values())  # parts are for logging


def test_total_loss_respects_custom_weights():
    torch.manual_seed(0)
    gt = (torch.rand(2, 1, 16, 16) > 0.5).float()
    logits = torch.randn(2, 1, 16, 16)
    aff_logits = torch.randn(2, 4, 4)
    w = LossWeights(l1=1.0, l2=2.0, bce=3.0, grad=4.0, airmf=0.25, aff=2.0)
    total, parts = total_loss(logits, gt, aff_logits, gt, (2, 2), radius=1, w=w)
    airmf = 1.0 * parts["l1"] + 2.0 * parts["l2"] + 3.0 * parts["bce"] + 4.0 * parts["grad"]
    torch.testing.assert_close(parts["airmf"], airmf)
    torch.testing.assert_close(total.detach(), 0.25 * airmf + 2.0 * parts["aff"])


def test_total_loss_without_affinity_is_half_airmf():
    gt = step_edge()
    total, parts = total_loss(torch.zeros_like(gt), gt)
    assert "aff" not in parts
    assert total.item() == pytest.approx(0.5 * parts["airmf"].item())


def test_paper_weights_are_the_defaults():
    w = LossWeights()
    assert (w.l1, w.l2, w.bce, w.grad, w.airmf, w.aff) == (0.2, 0.2, 0.3, 0.4, 0.5, 0.5)


def test_losses_give_gradients_to_the_logits():
    gt = step_edge()
    logits = torch.zeros_like(gt, requires_grad=True)
    aff = torch.zeros(1, 2, 2, requires_grad=True)
    total, _ = total_loss(logits, gt, aff, torch.tensor([1.0, 0.0]).view(1, 1, 1, 2), (1, 2), 1)
    total.backward()
    # pushing towards GT: negative gradient where GT is 1, positive where it is 0
    assert (logits.grad[gt == 1] < 0).all() and (logits.grad[gt == 0] > 0).all()
    assert aff.grad[0, 0, 1] > 0  # the cross-class pair is pushed towards "different"


def test_boundary_weighting_counts_band_pixels_more():
    from napari_airm.losses import LossWeights, airmf_loss, boundary_weights

    gt = torch.zeros(1, 1, 16, 16)
    gt[..., :, 8:] = 1
    w = boundary_weights(gt, radius=1, extra=4.0)
    assert w[0, 0, 0, 7] == 5 and w[0, 0, 0, 8] == 5 and w[0, 0, 0, 0] == 1 and w[0, 0, 0, 15] == 1
    # an error far from the boundary costs less with weighting than without
    logits = (gt * 2 - 1) * 6
    logits[..., 0, 0] = 6  # wrong, far from the boundary
    plain, _ = airmf_loss(logits, gt, LossWeights())
    weighted, _ = airmf_loss(logits, gt, LossWeights(boundary=4.0, boundary_radius=1))
    assert weighted < plain


def test_keep_weighting_charges_moving_a_correct_boundary_more_than_keeping_a_wrong_one():
    from napari_airm.losses import LossWeights, airmf_loss, boundary_weights

    gt = torch.zeros(1, 1, 16, 16)
    gt[..., :, 8:] = 1
    coarse = gt.clone()
    coarse[..., :8, 8] = 0  # rows 0-7: the coarse boundary is one pixel off; rows 8-15: right
    w = boundary_weights(gt, radius=1, extra=4.0, coarse=coarse, keep=3.0)
    assert w[0, 0, 12, 8] == 8 and w[0, 0, 12, 7] == 8  # band, coarse right: 1 + 4 + 3
    assert w[0, 0, 3, 8] == 5 and w[0, 0, 3, 7] == 8  # the wrong pixel gets no keep weight
    assert w[0, 0, 12, 0] == 1  # far from the boundary: unweighted
    # the same one-pixel error costs more where the coarse mask had it right
    moved_right = (gt * 2 - 1) * 6
    moved_right[..., 12, 8] = -6
    moved_wrong = (gt * 2 - 1) * 6
    moved_wrong[..., 3, 8] = -6
    weights = LossWeights(boundary=4.0, boundary_radius=1, keep=3.0)
    cost_right, _ = airmf_loss(moved_right, gt, weights, coarse)
    cost_wrong, _ = airmf_loss(moved_wrong, gt, weights, coarse)
    assert cost_right > cost_wrong
    # without a coarse mask (or keep = 0) it is the boundary weighting alone
    assert torch.equal(boundary_weights(gt, 1, 4.0, coarse, 0.0), boundary_weights(gt, 1, 4.0))
