"""Edge snapping: the refined boundary moves onto the image edge, nothing else changes."""
import numpy as np
import pytest
import torch

from napari_airm.engine.snap import snap_to_edges


def step_image(h: int = 24, w: int = 64, edge: int = 32) -> torch.Tensor:
    """Dark left of column ``edge``, bright from it on, a little colour noise."""
    rng = np.random.default_rng(0)
    img = np.where(np.arange(w) < edge, 0.25, 0.75)[None, :, None].repeat(h, 0).repeat(3, 2)
    img = img + rng.normal(0, 0.01, img.shape)
    return torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None]


def ramp(h: int, w: int, centre: float, width: float = 1.0) -> torch.Tensor:
    """A soft boundary: probability rising left to right, 0.5 at x = ``centre``."""
    x = torch.arange(w, dtype=torch.float32)
    return torch.sigmoid((x - centre) / width).expand(h, w)[None, None].clone()


def first_foreground_column(prob: torch.Tensor) -> set[int]:
    return {int(np.argmax(row)) for row in (prob[0, 0] > 0.5).numpy()}


@pytest.mark.parametrize("centre, snapped", [(30.6, 32), (31.1, 32), (32.1, 32), (32.6, 32),
                                             (29.1, 30), (29.6, 30), (33.1, 34)])
def test_a_soft_boundary_moves_onto_the_image_edge(centre, snapped):
    """A 0.5 crossing within a pixel of the image's edge (at column 32) lands on it; one 2 px
    or more off stays where the network put it (the window there sees a ramp, not a step)."""
    image, prob = step_image(), ramp(24, 64, centre)
    assert first_foreground_column(snap_to_edges(prob, image)) == {snapped}


def test_flat_maps_and_flat_images_pass_through():
    image = step_image()
    for value in (0.0, 0.3, 1.0):
        flat = torch.full((1, 1, 24, 64), value)
        torch.testing.assert_close(snap_to_edges(flat, image), flat, atol=1e-4, rtol=0)
    grey = torch.full((1, 3, 24, 64), 0.5)  # no edge to snap to: a straight boundary stays put
    prob = ramp(24, 64, 20.3)
    assert first_foreground_column(snap_to_edges(prob, grey)) == first_foreground_column(prob)


def test_output_is_a_probability_of_the_same_shape():
    rng = np.random.default_rng(1)
    image = torch.from_numpy(rng.random((1, 3, 40, 30), dtype=np.float32))
    prob = torch.from_numpy(rng.random((1, 1, 40, 30), dtype=np.float32))
    out = snap_to_edges(prob, image)
    assert out.shape == prob.shape and out.dtype == prob.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_a_crop_with_context_gives_exactly_the_frames_values():
    """What the tiled engine relies on: 2·radius pixels of context make a crop exact."""
    rng = np.random.default_rng(2)
    image = torch.from_numpy(rng.random((1, 3, 96, 80), dtype=np.float32))
    prob = torch.from_numpy(rng.random((1, 1, 96, 80), dtype=np.float32))
    whole = snap_to_edges(prob, image, radius=2)
    crop = snap_to_edges(prob[..., 20:70, 10:60], image[..., 20:70, 10:60], radius=2)
    assert torch.equal(crop[..., 4:-4, 4:-4], whole[..., 24:66, 14:56])


def test_blockwise_equals_the_filter_over_the_whole_frame():
    """Only blocks with a boundary are filtered, in batches: same values as the whole frame."""
    from napari_airm.engine.snap import SNAP_CONFIDENT, SNAP_SHARPNESS, guided_filter

    rng = np.random.default_rng(3)
    h, w = 150, 173  # not multiples of the block; the boundary reaches the frame's edges
    yy, xx = np.mgrid[0:h, 0:w]
    disc = 1 / (1 + np.exp(-(60 - np.hypot(yy - 70, xx - 40)) / 1.5))
    prob = torch.from_numpy(disc.astype(np.float32))[None, None]
    image = torch.from_numpy(rng.random((1, 3, h, w), dtype=np.float32))
    whole = guided_filter(prob, image, 2, 1e-3, SNAP_SHARPNESS).clamp(0, 1)
    uncertain = (prob > SNAP_CONFIDENT) & (prob < 1 - SNAP_CONFIDENT)
    expected = torch.where(uncertain, whole, prob)
    assert uncertain.float().mean() > 0.02
    assert torch.equal(snap_to_edges(prob, image), expected)


def test_ramps_are_not_snapped():
    """An upscaled image's edge is a ramp several pixels wide: nothing to snap to."""
    x = torch.arange(64, dtype=torch.float32)
    ramp_image = ((x - 24) / 16).clamp(0, 1).expand(3, 24, 64)[None].clone()  # 16-px ramp
    prob = ramp(24, 64, 31.3)
    torch.testing.assert_close(snap_to_edges(prob, ramp_image), prob, atol=0, rtol=0)
    assert not torch.equal(snap_to_edges(prob, ramp_image, sharpness=0), prob)
