"""The AIRM network: encode once, decode anywhere; per-image weights; attention probe; model files."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from napari_airm.model import AIRM, available_models, build_model, load_model, save_model
from napari_airm.model.affinity import affinity_loss
from napari_airm.model.airm import block_order
from napari_airm.model.implicit import pixel_centers
from napari_airm.model.implicit import query_features as _query_features


def query_features(z, coords):
    """Gather from a (B, C, h, w) map the way decoding does (per-cell terms, flattened)."""
    return _query_features(z.flatten(2).transpose(1, 2).contiguous(), z.shape[-2:], coords)

from conftest import disc_mask


@pytest.fixture(scope="module")
def airm_b0() -> AIRM:
    torch.manual_seed(0)
    return build_model("airm-b0").eval()


def batch(size=224, seed=0):
    """Two different images with two different coarse masks: (2,3,S,S) and (2,1,S,S)."""
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(2, 3, size, size, generator=g)
    masks = [disc_mask(size, size, (0.5 * size, 0.45 * size), 0.3 * size),
             disc_mask(size, size, (0.3 * size, 0.6 * size), 0.2 * size)]
    mask = torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))
    rgb = rgb * 0.5 + mask * torch.tensor([0.5, 0.2, 0.0]).view(1, 3, 1, 1)  # object is visible
    return rgb, mask


def sample_points(x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) sampled at normalised (y, x) coords (B,Q,2) → (B,Q,C), nearest pixel."""
    grid = coords.flip(-1).unsqueeze(1)  # grid_sample wants (x, y)
    return F.grid_sample(x, grid, mode="nearest", align_corners=False)[:, :, 0].transpose(1, 2)


# --------------------------------------------------------------------------------------------
# encode / decode at arbitrary coordinates
# --------------------------------------------------------------------------------------------
def test_encode_then_decode_at_random_continuous_coordinates(airm_b0):
    rgb, mask = batch()
    with torch.no_grad():
        enc = airm_b0.encode(rgb, mask)
        assert enc.feat.shape == (2, airm_b0.cfg.feat_dim, 56, 56)  # 1/4 resolution
        coords = torch.rand(2, 777, 2, generator=torch.Generator().manual_seed(1)) * 2 - 1
        point = sample_points(airm_b0.point_features(rgb, mask), coords)
        coarse = sample_points(mask, coords)[..., 0]
        logits = airm_b0.decode(enc, coords, (224, 224), point, coarse)
    assert logits.shape == (2, 777) and torch.isfinite(logits).all()
    # untrained + residual: the logit's sign is the coarse mask's at every query
    assert torch.equal(logits > 0, coarse > 0.5)
    # decoding is per query: a subset of the queries gives the same answers
    with torch.no_grad():
        sub = airm_b0.decode(enc, coords[:, 100:200], (224, 224), point[:, 100:200], coarse[:, 100:200])
    torch.testing.assert_close(sub, logits[:, 100:200], atol=1e-5, rtol=1e-5)


def test_training_and_inference_decode_the_same_logits(airm_b0):
    """Decoding has a lean in-place path for inference and an autograd-friendly one for
    training: a model must not answer differently when it is being trained."""
    rgb, mask = batch()
    coords = torch.rand(2, 500, 2, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        point = sample_points(airm_b0.point_features(rgb, mask), coords)
        coarse = sample_points(mask, coords)[..., 0]
        served = airm_b0.decode(airm_b0.encode(rgb, mask), coords, (224, 224), point, coarse)
    trained = airm_b0.decode(airm_b0.encode(rgb, mask), coords, (224, 224), point, coarse)
    assert trained.requires_grad
    torch.testing.assert_close(trained.detach(), served, atol=1e-5, rtol=1e-5)
    trained.sum().backward()
    assert all(p.grad is not None for p in airm_b0.hyper.parameters())
    airm_b0.zero_grad(set_to_none=True)


def test_decode_on_a_grid_four_times_the_input_resolution(airm_b0):
    """Encode at 224², decode at 896² (a 64×64 window of the pixel-centre grid, to stay cheap)."""
    rgb, mask = batch()
    big = 4 * 224
    y0, x0, n = 400, 300, 64  # window on the coarse mask's boundary
    rgb_big = F.interpolate(rgb, scale_factor=4, mode="nearest")
    mask_big = F.interpolate(mask, scale_factor=4, mode="nearest")
    assert 0 < mask_big[:, :, y0:y0 + n, x0:x0 + n].mean() < 1
    h = airm_b0.guide_halo  # the guide convolutions need this much context around the window
    with torch.no_grad():
        enc = airm_b0.encode(rgb, mask)
        point = airm_b0.point_features(rgb_big[:, :, y0 - h:y0 + n + h, x0 - h:x0 + n + h],
                                       mask_big[:, :, y0 - h:y0 + n + h, x0 - h:x0 + n + h])
        point = point[:, :, h:-h, h:-h].flatten(2).transpose(1, 2)
        grid = pixel_centers(big, big).reshape(big, big, 2)
        coords = grid[y0:y0 + n, x0:x0 + n].reshape(1, -1, 2).expand(2, -1, -1)
        coarse = mask_big[:, 0, y0:y0 + n, x0:x0 + n].reshape(2, -1)
        logits = airm_b0.decode(enc, coords, (big, big), point, coarse)
        # the decoder is told the output scale (cell size 56/896 vs 56/224 feature cells)
        same_scale = airm_b0.decode(enc, coords, (224, 224), point, coarse)
    assert logits.shape == (2, n * n) and torch.isfinite(logits).all()
    assert not torch.allclose(logits, same_scale)
    # the untrained residual model reproduces the (upsampled) coarse mask at 4x resolution
    assert torch.equal(logits > 0, coarse > 0.5)


@pytest.mark.parametrize("blocks", [0, 1])
def test_point_features_at_pixels_equal_the_dense_guide(blocks):
    """The engine's band path (features at chosen pixels, frame edges included) computes exactly
    what the dense, zero-padded guide gives, with or without residual guide blocks."""
    torch.manual_seed(0)
    model = build_model({**build_model("airm-b0").cfg.to_dict(), "guide_blocks": blocks}).eval()
    for p in model.guide.parameters():  # the residual branch starts at zero: make it count
        torch.nn.init.normal_(p, std=0.2)
    rgb, mask = batch(size=160)
    rgb, mask = rgb[:1, :, :157], mask[:1, :, :157]  # not square, not a multiple of the block
    g = torch.Generator().manual_seed(1)
    ys = torch.cat([torch.tensor([0, 156, 0, 156, 63, 64, 65]), torch.randint(0, 157, (500,), generator=g)])
    xs = torch.cat([torch.tensor([0, 0, 159, 159, 64, 63, 127]), torch.randint(0, 160, (500,), generator=g)])
    order = block_order(ys, xs, 160)
    with torch.no_grad():
        dense = model.point_features(rgb, mask)[0, :, ys, xs].T
        guide_input = model.guide_input(rgb, mask)
        at = model.point_features_at(mask, guide_input, ys, xs)[0]  # any order is right
        grouped = model.point_features_at(mask, guide_input, ys[order], xs[order])[0]
    assert model.guide_halo == 2 + 2 * blocks
    torch.testing.assert_close(at, dense, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grouped, dense[order], atol=1e-5, rtol=1e-5)


def test_a_grown_guide_starts_as_the_model_it_grew_from(airm_b0):
    grown = build_model({**airm_b0.cfg.to_dict(), "guide_blocks": 1}).eval()
    missing, unexpected = grown.load_state_dict(airm_b0.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("guide.blocks.") for k in missing)
    rgb, mask = batch()
    with torch.no_grad():
        torch.testing.assert_close(grown.refine_frame(rgb, mask), airm_b0.refine_frame(rgb, mask))


# --------------------------------------------------------------------------------------------
# hypernetwork vs shared MLP
# --------------------------------------------------------------------------------------------
def test_hypernetwork_gives_each_image_its_own_weights(airm_b0):
    rgb, mask = batch()
    with torch.no_grad():
        enc = airm_b0.encode(rgb, mask)
        alone = airm_b0.encode(rgb[1:], mask[1:])
    w = enc.weights
    assert len(w.weights) == len(airm_b0.mlp_dims) - 1
    for layer, (W, b) in enumerate(zip(w.weights, w.biases)):
        n_in, n_out = airm_b0.mlp_dims[layer], airm_b0.mlp_dims[layer + 1]
        assert W.shape == (2, n_out, n_in) and b.shape == (2, n_out)
        assert not torch.allclose(W[0], W[1]), f"layer {layer}: both images got the same weights"
        # per image, not per batch: the second image alone gets the same weights (eval mode)
        torch.testing.assert_close(alone.weights.weights[layer][0], W[1], atol=1e-5, rtol=1e-4)


def test_sirm_uses_one_shared_mlp_for_all_images():
    model = build_model("sirm-b0").eval()
    assert model.hyper is None
    rgb, mask = batch()
    with torch.no_grad():
        enc = model.encode(rgb, mask)
    for W, b, shared in zip(enc.weights.weights, enc.weights.biases, model.shared.weights):
        assert torch.equal(W[0], W[1]) and torch.equal(b[0], b[1])
        assert torch.equal(W[0], shared)


def test_weights_of_a_global_view_can_be_reused_for_tiles(airm_b0):
    """``encode(weights=...)``: a tile decodes with the weights derived from the whole image."""
    rgb, mask = batch()
    with torch.no_grad():
        whole = airm_b0.encode(rgb[:1], mask[:1])
        tile = airm_b0.encode(rgb[:1, :, :96, :96], mask[:1, :, :96, :96], weights=whole.weights)
    for a, b in zip(tile.weights.weights, whole.weights.weights):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------
# residual start
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["airm-b0", "sirm-b0", "airm-b0-lowrank"])
def test_untrained_model_reproduces_a_binary_coarse_mask(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    rgb, mask = batch(96)
    prob = model.refine_frame(rgb, mask)
    assert prob.shape == mask.shape
    assert torch.equal(prob > 0.5, mask > 0.5)


# --------------------------------------------------------------------------------------------
# MiT encoder: fused attention unless the probabilities are asked for
# --------------------------------------------------------------------------------------------
def _spy_on_probe(model):
    seen = []

    def hook(module, args, output):
        seen.append(module.probs)

    return seen, model.encoder.probe.register_forward_hook(hook)


def test_mit_without_pairs_runs_timms_fused_attention(airm_b0, monkeypatch):
    probe = airm_b0.encoder.probe
    assert probe.fused_attn and probe.sr is None  # last stage: sr ratio 1, fused by default
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(a[0].shape) or sdpa(*a, **k))
    seen, handle = _spy_on_probe(airm_b0)
    try:
        rgb, mask = batch(64)
        with torch.no_grad():
            enc = airm_b0.encode(rgb, mask)
    finally:
        handle.remove()
    assert enc.pairs is None and enc.pair_grid is None
    assert seen == [None]  # nothing was materialised in the probed block
    n_blocks = sum(len(s.blocks) for s in airm_b0.encoder.backbone.stages)
    assert len(calls) == n_blocks  # every block, the probed one included, used fused attention


def test_mit_with_pairs_returns_attention_probabilities(airm_b0, monkeypatch):
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    seen, handle = _spy_on_probe(airm_b0)
    try:
        rgb, mask = batch()
        with torch.no_grad():
            enc = airm_b0.encode(rgb, mask, want_pairs=True)
    finally:
        handle.remove()
    heads = airm_b0.encoder.num_heads
    assert enc.pair_grid == (7, 7)  # 224 / 32
    assert enc.pairs.shape == (2, heads, 49, 49)
    assert seen[0] is not None and seen[0] is enc.pairs
    assert (enc.pairs >= 0).all()
    torch.testing.assert_close(enc.pairs.sum(-1), torch.ones(2, heads, 49))
    n_blocks = sum(len(s.blocks) for s in airm_b0.encoder.backbone.stages)
    assert len(calls) == n_blocks - 1  # only the probed block ran explicitly
    assert airm_b0.encoder.probe.probs is None and not airm_b0.encoder.probe.capture  # reset


def test_explicit_attention_equals_fused_attention(airm_b0):
    rgb, mask = batch()
    from napari_airm.model.airm import normalise
    x = normalise(rgb, mask)
    with torch.no_grad():
        fused, _ = airm_b0.encoder(x, want_pairs=False)
        explicit, pairs = airm_b0.encoder(x, want_pairs=True)
    assert pairs is not None
    torch.testing.assert_close(explicit, fused, atol=1e-5, rtol=1e-5)
    # and the probabilities really are the ones the block used: softmax(q kᵀ / √d) v
    probe = airm_b0.encoder.probe
    tokens = {}
    handle = probe.register_forward_hook(lambda m, args, out: tokens.update(x=args[0], out=out))
    try:
        with torch.no_grad():
            airm_b0.encoder(x, want_pairs=False)
            B, N, C = tokens["x"].shape
            v = probe.kv(tokens["x"]).reshape(B, N, 2, probe.num_heads, -1).permute(2, 0, 3, 1, 4)[1]
            manual = probe.proj((pairs @ v).transpose(1, 2).reshape(B, N, C))
    finally:
        handle.remove()
    torch.testing.assert_close(manual, tokens["out"], atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# affinity loss reaches the encoder
# --------------------------------------------------------------------------------------------
def test_affinity_loss_is_finite_and_trains_the_encoder():
    torch.manual_seed(0)
    model = build_model("airm-b0").train()
    rgb, mask = batch()
    enc = model.encode(rgb, mask, want_pairs=True)
    logits = model.affinity(enc.pairs)
    assert logits.shape == (2, 49, 49)
    loss = affinity_loss(logits, mask, enc.pair_grid, model.cfg.affinity_radius)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    backbone = model.encoder.backbone
    for name, param in [("patch_embed", backbone.patch_embed.proj.weight),
                        ("last-stage q", model.encoder.probe.q.weight),
                        ("last-stage kv", model.encoder.probe.kv.weight),
                        ("first-stage block", backbone.stages[0].blocks[0].attn.q.weight)]:
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name
    assert model.affinity.mlp[0].weight.grad.abs().sum() > 0


def test_cnn_encoder_gives_feature_affinities():
    model = build_model("airm-r18").eval()
    rgb, mask = batch(64)
    with torch.no_grad():
        enc = model.encode(rgb, mask, want_pairs=True)
    assert enc.pair_grid == (2, 2) and enc.pairs.shape == (2, 8, 4, 4)
    assert (enc.pairs.abs() <= 1 + 1e-5).all()  # cosine similarities


# --------------------------------------------------------------------------------------------
# LIIF local ensemble
# --------------------------------------------------------------------------------------------
def test_liif_blend_weights_sum_to_one():
    z = torch.randn(2, 3, 5, 7)
    coords = torch.rand(2, 500, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    gathered, rel, blend = query_features(z, coords)
    assert gathered.shape == (2, 4, 500, 3) and rel.shape == (2, 4, 500, 2)
    assert blend.shape == (2, 4, 500) and (blend >= 0).all()
    torch.testing.assert_close(blend.sum(1), torch.ones(2, 500))
    # every neighbour is within one cell of the query in each direction
    assert (rel.abs() <= 1 + 1e-5).all()


def test_liif_query_at_a_cell_centre_is_that_cell():
    h, w = 4, 6
    z = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w)  # each cell holds its index
    centres = pixel_centers(h, w).reshape(h, w, 2)
    inner = centres[1:-1, 1:-1].reshape(1, -1, 2)
    gathered, rel, blend = query_features(z, inner)
    value = (gathered[..., 0] * blend).sum(1)
    expected = z[0, 0, 1:-1, 1:-1].reshape(1, -1)
    torch.testing.assert_close(value, expected, atol=1e-5, rtol=0)
    # the shift (-1, -1) lands on the cell itself (rel 0) and carries (almost) all the weight
    torch.testing.assert_close(gathered[:, 0, :, 0], expected)
    assert (blend[:, 0] > 0.999).all()
    assert rel[:, 0].abs().max() < 1e-5


def test_liif_query_on_a_cell_corner_averages_the_four_cells():
    h, w = 4, 4
    z = torch.tensor([[1.0, 2.0, 0, 0], [3.0, 4.0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]).view(1, 1, h, w)
    corner = torch.tensor([[[-0.5, -0.5]]])  # shared corner of cells (0,0), (0,1), (1,0), (1,1)
    gathered, rel, blend = query_features(z, corner)
    # each neighbour is half a cell away in y and x: every area is 0.25, every weight 1/4
    torch.testing.assert_close(blend[0, :, 0], torch.full((4,), 0.25))
    torch.testing.assert_close(rel[0, :, 0].abs(), torch.full((4, 2), 0.5))
    assert sorted(gathered[0, :, 0, 0].tolist()) == [1.0, 2.0, 3.0, 4.0]
    assert (gathered[..., 0] * blend).sum().item() == pytest.approx(2.5)


def test_liif_blend_is_the_opposite_cells_area():
    z = torch.zeros(1, 1, 4, 4)
    # a quarter of the way from the centre of cell (1, 1) towards cell (2, 2)
    q = torch.tensor([[[(2 * 1 + 1) / 4 - 1 + 0.125, (2 * 1 + 1) / 4 - 1 + 0.125]]])
    _, rel, blend = query_features(z, q)
    # rel to cell (1,1) = (0.25, 0.25) cells; to (2,2) = (-0.75, -0.75); to (1,2), (2,1) mixed.
    # areas: S11 = 1/16, S22 = 9/16, S12 = S21 = 3/16; weight of (1,1) = S22 / 1 = 9/16
    torch.testing.assert_close(blend[0, :, 0], torch.tensor([9, 3, 3, 1]) / 16.0)


# --------------------------------------------------------------------------------------------
# model files
# --------------------------------------------------------------------------------------------
def test_save_and_load_round_trip(airm_b0, tmp_path):
    folder = save_model(airm_b0, tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "weights.safetensors"]
    stored = load_file(str(folder / "weights.safetensors"))
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    loaded = load_model(folder)
    assert not loaded.training and loaded.cfg == airm_b0.cfg
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    rgb, mask = batch(96)
    soft = mask * 0.6 + 0.2  # a soft mask, so the output is not just the residual's sign
    with torch.no_grad():
        a = torch.sigmoid(airm_b0.decode_frame(airm_b0.encode(rgb, soft), rgb, soft))
        b = torch.sigmoid(loaded.decode_frame(loaded.encode(rgb, soft), rgb, soft))
    torch.testing.assert_close(b, a, atol=5e-3, rtol=0)


def test_full_precision_save_is_exact(airm_b0, tmp_path):
    loaded = load_model(save_model(airm_b0, tmp_path / "m", half=False))
    for (k, v), (k2, v2) in zip(airm_b0.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


def test_state_dict_lists_every_tensor_once(airm_b0):
    """The attention probe is an alias of the last block, not a second copy of its weights
    (safetensors refuses tensors that share memory; a checkpoint of airm-b0 must save)."""
    state = airm_b0.state_dict()
    assert not any(".probe." in k for k in state)
    ptrs = [v.data_ptr() for v in state.values() if v.numel()]
    assert len(ptrs) == len(set(ptrs))


def test_files_with_old_probe_duplicates_still_load(airm_b0, tmp_path):
    from safetensors.torch import save_file
    folder = save_model(airm_b0, tmp_path / "m", half=False)
    state = load_file(str(folder / "weights.safetensors"))
    prefix = "encoder.backbone.stages.3.blocks.1.attn."
    for k in [k for k in state if k.startswith(prefix)]:
        state["encoder.probe." + k[len(prefix):]] = state[k].clone()
    save_file(state, str(folder / "weights.safetensors"))
    loaded = load_model(folder)
    torch.testing.assert_close(loaded.encoder.probe.q.weight, airm_b0.encoder.probe.q.weight)


def test_load_model_rejects_a_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(ValueError, match=r"is not a napari-airm model folder.*config\.yaml.*"
                                         r"weights\.safetensors"):
        load_model(tmp_path)
    (tmp_path / "config.yaml").write_text("format: something-else\n")
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="not a napari-airm model config"):
        load_model(tmp_path)


def test_load_model_rejects_weights_of_another_architecture(tmp_path):
    folder = save_model(build_model("sirm-b0"), tmp_path / "m")
    text = (folder / "config.yaml").read_text().replace("mapping: sirm", "mapping: airm")
    (folder / "config.yaml").write_text(text)
    with pytest.raises(ValueError, match="do not fit its config"):
        load_model(folder)


# --------------------------------------------------------------------------------------------
# bad input and names
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rgb,mask,match", [
    (torch.rand(1, 4, 32, 32), torch.rand(1, 1, 32, 32), r"image must be \(B, 3, H, W\) RGB"),
    (torch.rand(1, 3, 32, 32), torch.rand(1, 2, 32, 32), r"mask must be \(B, 1, H, W\)"),
    (torch.rand(3, 32, 32), torch.rand(1, 32, 32), r"image must be \(B, 3, H, W\)"),
    (torch.rand(1, 3, 32, 32), torch.rand(1, 1, 32, 40), "differ in batch or size"),
    (torch.rand(2, 3, 32, 32), torch.rand(1, 1, 32, 32), "differ in batch or size"),
    (torch.full((1, 3, 32, 32), math.nan), torch.rand(1, 1, 32, 32), "NaN"),
    (torch.rand(1, 3, 32, 32), torch.full((1, 1, 32, 32), math.inf), "NaN or infinite"),
    (torch.rand(1, 3, 0, 0), torch.rand(1, 1, 0, 0), "empty"),
    (torch.rand(0, 3, 32, 32), torch.rand(0, 1, 32, 32), "empty"),
])
def test_encode_rejects_bad_input(airm_b0, rgb, mask, match):
    with pytest.raises(ValueError, match=match):
        airm_b0.encode(rgb, mask)


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown model 'airm-b9'.*airm-b0.*sirm-b0"):
        build_model("airm-b9")
    assert {"airm-b0", "airm-b1", "sirm-b0", "airm-lite0"} <= set(available_models())


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="unknown encoder 'vit_huge'"):
        build_model("airm-b0", encoder="vit_huge")
    with pytest.raises(ValueError, match="mapping must be"):
        build_model("airm-b0", mapping="mlp")
    with pytest.raises(ValueError, match=r"unknown model config keys: \['colour'\]"):
        build_model("airm-b0", colour="red")


def test_decoding_runs_under_autocast():
    """CUDA runs the engine under float16 autocast; in-place ops are outside autocast and once
    mixed half and float operands in the decoder (found on an H100). CPU bfloat16 autocast
    reproduces the mix."""
    torch.manual_seed(0)
    model = build_model("airm-lite0", encoder_init=None).eval()
    rgb = torch.rand(1, 3, 64, 96)
    coarse = (torch.rand(1, 1, 64, 96) > 0.5).float()
    with torch.no_grad():
        expected = model.refine_frame(rgb, coarse)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.refine_frame(rgb, coarse)
    assert low.shape == expected.shape
    assert ((low.float() > 0.5) == (expected > 0.5)).float().mean() > 0.99
