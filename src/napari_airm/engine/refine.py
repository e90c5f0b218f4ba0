"""Tile-by-tile refinement of images of any size (DESIGN.md §2.9 and §3).

1. Global stage: the whole image, average-pooled to at most ``global_side`` pixels a side, is
   encoded once; its hypernetwork weights are shared by every later tile (global semantics,
   tiles that agree) and its refined map seeds the cascade.
2. Tile-local stages (encode ratios 0.25 and 0.5 finer than the global one, each decoded at
   twice its encode resolution): each full-resolution tile plus context is encoded at every
   stage. Its coarse mask is the given mask read at the stage's resolution, except where the
   earlier stages corrected it: there the previous stage's map, upsampled ("anchoring"; without
   it the cascade only ever sees the given mask at the global stage's coarse resolution and
   loses every finer detail of a good mask). Fast path: tiles with no boundary near them are
   filled, not computed, and inside a tile only the uncertain band around the current boundary
   is decoded. ``dense=True`` computes every tile and every pixel (the reference).
   ``flips`` = 2 or 4 runs every stage on mirrored views as well (left–right; and up–down and
   both) and averages the probabilities: test-time augmentation that cancels a directional
   lean of the network and averages its noise, for 2× or 4× the compute.
3. The final decision, per output tile (``_finish``): the given mask outside the trust region
   (``reach.py``), the full-resolution boundary solve inside it (``solve.py``), the network's
   vote weighed by how far its global mask agrees with the given one (``network_trust``; none
   at all, and no tile stages, when they disagree as a whole).
4. Output is written tile by tile into ``out`` (numpy, zarr, anything with ``__setitem__``).

Memory depends on the tile size and ``global_side``, never on the image size.
"""
from __future__ import annotations

import warnings
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from ..model.airm import AIRM, block_order
from ..model.fuse import inference_copy
from .errors import Cancelled, InputError
from .labels import refine_labels, scan_mask
from .reach import Reach, ReachMap, resolve_reach
from .schedule import Box, Plan, band_mask, decode_pitch, is_uniform, make_plan, resample
from .settings import RefineSettings
from .solve import SolveWeights, network_trust, solve_boundary
from .source import ImageSource, MaskSource

FINISH_HALO = 32  # pixels around a tile that the boundary solve also sees, so tiles agree
DECODE_CHUNK = 1 << 14  # queries decoded at once: bounds the MLP temporaries (~20 MB)
GLOBAL_READ_BLOCK = 2048  # full-resolution pixels read at once for the global view
# Anchoring tile stages to the given mask (BinaryRefiner(anchor=True)): a stage pixel belongs to a
# correction of the earlier stages when, in the (2·ANCHOR_MARGIN+1)² stage pixels around it, the
# previous map differs from the given mask by more than CHANGE_SHARE on average (a boundary moved
# by under ~half the window is not a correction); corrections are widened by ANCHOR_MARGIN.
# Chosen on the first 3 pseudo-UHR val images (docs/performance.md).
CHANGE_SHARE = 0.5
ANCHOR_MARGIN = 5
# Test-time flip averaging: flips=N runs every stage on these mirrored views (dims of an NCHW
# tensor) and averages the probabilities.
FLIP_VIEWS = {1: ((),), 2: ((), (3,)), 4: ((), (3,), (2,), (2, 3))}


class BinaryRefiner:
    """Refines one binary (or soft) mask given as a box reader; the core of every path.

    ``reach``: the trust region (``reach.py``) resolved for the whole image, or None."""

    def __init__(self, model: AIRM, device: torch.device, settings: RefineSettings = RefineSettings(),
                 reach: Reach | None = None, *, context: int = 48, global_band: int = 32):
        self.settings = settings
        self.views = FLIP_VIEWS[settings.flips]
        self.model = inference_copy(model).to(device)  # BN folded, channels-last; caller's model untouched
        self.device, self.dense, self.passes = device, settings.dense, settings.passes
        self.anchor, self.solve = settings.anchor, settings.solve
        self.reach = reach
        self.solve_weights = SolveWeights() if settings.keep is None else SolveWeights(given=settings.keep)
        self.tile, self.global_side = settings.tile, settings.global_side
        self.context, self.global_band = context, global_band
        self.autocast = device.type == "cuda"
        self.trust = 1.0  # how far the network's vote counts (``network_trust``), per run

    def plan(self, height: int, width: int) -> Plan:
        return make_plan(height, width, self.tile, self.global_side, self.context, self.global_band)

    # -- public -----------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, image: ImageSource, read_mask: Callable[[Box], np.ndarray], height: int,
            width: int, write: Callable[[Box, np.ndarray], None],
            progress: Callable[[int, int], None] | None = None,
            cancel: Callable[[], bool] | None = None) -> None:
        plan = self.begin(read_mask, height, width, progress, cancel)
        full_res_global = not plan.stage_pitches  # the global stage decodes full resolution
        g_prob, g_box, weights = self.global_context(image, plan)
        trust = self.trust
        if trust == 0.0 and (self.reach is not None or self.solve) and not full_res_global:
            self._without_network(image, plan, write)
            return
        if full_res_global:
            g_np = g_prob[0, 0].float().cpu().numpy()
            for tile in plan.tiles():
                self._check(cancel)
                write(tile, self._finish(image, tile, g_np, g_box))
                self._advance(1)
            return
        whole = (0, plan.height, 0, plan.width)
        self._level(image, plan, 0, whole, (g_prob, g_box, plan.global_decode_pitch), weights, write)

    def begin(self, read_mask: Callable[[Box], np.ndarray], height: int, width: int,
              progress: Callable[[int, int], None] | None = None,
              cancel: Callable[[], bool] | None = None) -> Plan:
        """Prepare a run over a height×width mask (its reader, trust region, progress count)
        and return its plan. ``run`` starts here; a distributed worker starts here too, so
        that its tiles see exactly what the single process's would."""
        plan = self.plan(height, width)
        self._read_mask, self._shape = read_mask, (height, width)
        self._reach_map = ReachMap(self.reach, read_mask, height, width) if self.reach else None
        global_runs = self.passes if not plan.stage_pitches else 1
        self._total = len(plan.tiles()) + global_runs
        self._done, self._progress, self._cancel = 0, progress, cancel
        return plan

    def global_context(self, image: ImageSource, plan: Plan):
        """The global stage, every pass of it: (probability map, its box, hypernetwork weights)
        that every tile-local stage starts from. Sets ``self.trust``."""
        full_res_global = not plan.stage_pitches
        global_runs = self.passes if full_res_global else 1
        self._check(self._cancel)
        g_prob, g_box, weights = self._global_stage(image, self._read_mask, plan)
        trust = self.trust  # judged against the given mask, not a later pass's input
        self._advance(1)
        for _ in range(global_runs - 1):  # later passes refine the thresholded previous result
            self._check(self._cancel)
            previous = MaskSource.wrap((g_prob[0, 0] > 0.5).cpu().numpy())  # pitch 1 from (0, 0)
            g_prob, g_box, weights = self._global_stage(image, previous.read, plan)
            self._advance(1)
        self.trust = trust
        return g_prob, g_box, weights

    def finish_given(self, image: ImageSource, tile: Box) -> np.ndarray:
        """A tile decided without the network's tile stages: the final decision on the given
        mask alone (``_without_network``)."""
        box = self._around(tile, FINISH_HALO)
        given = np.asarray(self._read_mask(box), dtype=np.float32)
        return self._finish(image, tile, given, box)

    def _without_network(self, image: ImageSource, plan: Plan, write) -> None:
        """The network is out of its domain here (``network_trust`` is 0: its global mask and
        the given one disagree as a whole), so its vote counts for nothing and its tile stages
        are skipped: every tile is decided by the given mask and the image alone."""
        warnings.warn("the model's reading of this image disagrees with the given mask as a whole, "
                      "so its vote is dropped: the mask is kept except where the image's edges say "
                      "otherwise (fine-tune on your corrected masks to refine images like this)",
                      UserWarning, stacklevel=4)
        for tile in plan.tiles():
            self._check(self._cancel)
            write(tile, self.finish_given(image, tile))
            self._advance(1)

    def _level(self, image, plan: Plan, level: int, parent: Box, prev, weights, write) -> None:
        """Process the tiles of tile-local stage ``level`` inside ``parent``: skip those far from
        any boundary, run the stage on the others and recurse into the next stage."""
        prev_map, prev_box, prev_pitch = prev
        prev_np = prev_map[0, 0].float().cpu().numpy()
        e = plan.stage_pitches[level]
        last = level == len(plan.stage_pitches) - 1
        reach = plan.reach(prev_pitch, e)
        for tile in plan.tiles_within(parent, plan.level_tile(level)):
            self._check(self._cancel)
            outputs = plan.tiles_within(tile, plan.tile)
            trusting = self.reach is not None
            if not self.dense and trusting and not self._reach_map.allowed(tile).any():
                for out in outputs:  # nothing here may change: the given mask stands
                    write(out, self._read_mask(out) > 0.5)
                self._advance(len(outputs))
                continue
            if not self.dense and not trusting and is_uniform(prev_np, prev_box, prev_pitch, tile, reach):
                y, x = (tile[0] - prev_box[0]) // prev_pitch, (tile[2] - prev_box[2]) // prev_pitch
                value = bool(prev_np[y, x] > 0.5)
                for out in outputs:
                    write(out, np.full((out[1] - out[0], out[3] - out[2]), value))
                self._advance(len(outputs))
                continue
            prob, box = self._stage(image, plan, tile, e, prev, weights, anchor=self.anchor)
            for _ in range(self.passes - 1 if last else 0):
                # later passes refine the thresholded previous result of the same tile
                self._check(self._cancel)
                prob, box = self._stage(image, plan, tile, e,
                                        ((prob > 0.5).float(), box, decode_pitch(e)), weights)
            _trim_heap()
            if last:
                write(tile, self._finish(image, tile, prob[0, 0].float().cpu().numpy(), box))
                self._advance(1)
            else:
                self._level(image, plan, level + 1, tile, (prob, box, decode_pitch(e)), weights, write)

    def _advance(self, n: int) -> None:
        self._done += n
        if self._progress:
            self._progress(self._done, self._total)

    # -- the final decision -------------------------------------------------------------------
    def _around(self, box: Box, margin: int) -> Box:
        h, w = self._shape
        return max(0, box[0] - margin), min(h, box[1] + margin), max(0, box[2] - margin), min(w, box[3] + margin)

    def finish_window(self, tile: Box, prob_box: Box) -> Box:
        """The window the final decision of ``tile`` sees: the tile plus FINISH_HALO, inside
        the image and the network's probability map."""
        win = self._around(tile, FINISH_HALO)
        return (max(win[0], prob_box[0]), min(win[1], prob_box[1]),
                max(win[2], prob_box[2]), min(win[3], prob_box[3]))

    def _finish(self, image: ImageSource, tile: Box, prob: np.ndarray, prob_box: Box) -> np.ndarray:
        """The tile's final bool mask from the network's full-resolution probability ``prob``
        (covering ``prob_box``): the given mask outside the trust region, the boundary solve
        (or the thresholded probability) inside it. Decided on the tile plus FINISH_HALO so
        that neighbouring tiles agree."""
        if self.reach is None and not self.solve:
            return prob[tile[0] - prob_box[0]:tile[1] - prob_box[0],
                        tile[2] - prob_box[2]:tile[3] - prob_box[2]] > 0.5
        win = self.finish_window(tile, prob_box)
        p = prob[win[0] - prob_box[0]:win[1] - prob_box[0], win[2] - prob_box[2]:win[3] - prob_box[2]]
        given = self._read_mask(win) > 0.5
        allowed = self._reach_map.allowed(win) if self.reach is not None else None
        if self.solve:
            final = solve_boundary(image.read(win), p, given, allowed, self.solve_weights,
                                   trust=self.trust)
        else:
            vote = self.trust * p + (1 - self.trust) * given
            final = vote > 0.5 if allowed is None else np.where(allowed, vote > 0.5, given)
        return final[tile[0] - win[0]:tile[1] - win[0], tile[2] - win[2]:tile[3] - win[2]]

    # -- stages -----------------------------------------------------------------------------
    def _global_stage(self, image: ImageSource, read_mask, plan: Plan):
        """Encode the whole image at the global pitch; decode at the global decode pitch."""
        p, d = plan.global_pitch, plan.global_decode_pitch
        gh, gw = plan.global_shape
        box = (0, gh * p, 0, gw * p)
        rgb_e = torch.empty(1, 3, gh, gw)
        mask_e = torch.empty(1, 1, gh, gw)
        rgb_d = torch.empty(1, 3, gh * p // d, gw * p // d)
        given_d = torch.empty(1, 1, gh * p // d, gw * p // d)
        step = max(p, (GLOBAL_READ_BLOCK // p) * p)  # blocks of whole global pixels
        for y in range(0, gh * p, step):
            for x in range(0, gw * p, step):
                b = (y, min(y + step, gh * p), x, min(x + step, gw * p))
                img = torch.from_numpy(image.read(b)).permute(2, 0, 1)[None]
                m = torch.from_numpy(np.asarray(read_mask(b), dtype=np.float32))[None, None]
                rgb_e[..., b[0] // p:b[1] // p, b[2] // p:b[3] // p] = _pool(img, p)
                mask_e[..., b[0] // p:b[1] // p, b[2] // p:b[3] // p] = _pool(m, p)
                rgb_d[..., b[0] // d:b[1] // d, b[2] // d:b[3] // d] = _pool(img, d)
                given_d[..., b[0] // d:b[1] // d, b[2] // d:b[3] // d] = _pool(m, d)
        rgb_e, mask_e, rgb_d = rgb_e.to(self.device), mask_e.to(self.device), rgb_d.to(self.device)
        coarse_d = resample(mask_e, box, p, box, d).clamp_(0, 1)
        radius = max(plan.global_band, plan.band_radius(p, d))
        prob, weights = self._predict(rgb_e, mask_e, rgb_d, coarse_d, radius, None)
        self.trust = network_trust(prob[0, 0].float().cpu().numpy() > 0.5, given_d[0, 0].numpy() > 0.5)
        return prob, box, weights

    def _stage(self, image: ImageSource, plan: Plan, tile: Box, e: int, prev, weights,
               anchor: bool = False):
        """One tile-local stage: encode tile + context at pitch ``e`` with the previous map as
        coarse mask, decode at pitch e/2. Returns (prob (1,1,h,w), its box).

        ``anchor``: the coarse mask is the given mask read at this stage's pitches, except
        inside the earlier stages' corrections (``_anchor``), so detail finer than the previous
        stage's pixels survives. Tiles the previous map has no boundary near are still skipped."""
        prev_map, prev_box, prev_pitch = prev
        d = decode_pitch(e)
        box = plan.stage_box(tile, e)
        crop = torch.from_numpy(image.read(box)).permute(2, 0, 1)[None].to(self.device)
        coarse_e = resample(prev_map, prev_box, prev_pitch, box, e).clamp_(0, 1)
        coarse_d = resample(prev_map, prev_box, prev_pitch, box, d).clamp_(0, 1)
        if anchor:
            given = torch.from_numpy(np.asarray(self._read_mask(box), dtype=np.float32))[None, None]
            given = given.to(self.device)
            coarse_e, coarse_d = _anchor(_pool(given, e), _pool(given, d), coarse_e, coarse_d,
                                         ANCHOR_MARGIN, e // d)
        rgb_d = _pool(crop, d)
        prob, _ = self._predict(_pool(crop, e), coarse_e, rgb_d, coarse_d,
                                plan.band_radius(prev_pitch, d), weights)
        return prob, box

    # -- decoding ---------------------------------------------------------------------------
    def _predict(self, rgb_e, coarse_e, rgb_d, coarse_d, radius: int, weights):
        """Encode at pitch e, decode at pitch d, averaged over the flip views. ``weights``: the
        global stage's hypernetwork weights, one per view (None: predict them from this frame).
        Returns (prob (1,1,h,w), the weights used, one per view)."""
        total, used = None, []
        for k, dims in enumerate(self.views):
            f = (lambda t: torch.flip(t, dims)) if dims else (lambda t: t)  # noqa: E731
            with self._amp():
                enc = self.model.encode(f(rgb_e), f(coarse_e), check=False,
                                        weights=None if weights is None else weights[k])
                prob = f(self._decode(enc, f(rgb_d), f(coarse_d), radius))
            total = prob if total is None else total.add_(prob)
            used.append(enc.weights)
        return total.div_(len(self.views)) if len(self.views) > 1 else total, used

    def _decode(self, enc, rgb, coarse, radius: int) -> torch.Tensor:
        """Probabilities (1,1,H,W) of the frame ``rgb``: every pixel when dense, else only the
        band of ``radius`` pixels around the coarse boundary (elsewhere the coarse value)."""
        H, W = rgb.shape[-2:]
        if self.dense:
            ys, xs = (t.reshape(-1) for t in torch.meshgrid(
                torch.arange(H, device=rgb.device), torch.arange(W, device=rgb.device), indexing="ij"))
        else:
            band = torch.from_numpy(band_mask(coarse[0, 0].float().cpu().numpy(), radius))
            ys, xs = (t.to(rgb.device) for t in torch.nonzero(band, as_tuple=True))
        n = len(ys)
        prob = coarse.clone().float()
        if n == 0:
            return prob
        order = block_order(ys, xs, W)  # the guide is computed block by block
        ys, xs = ys[order], xs[order]
        guide_input = self.model.guide_input(rgb, coarse) if self.model.guide is not None else None
        flat = prob.view(-1)
        for s in range(0, n, DECODE_CHUNK):
            y, x = ys[s:s + DECODE_CHUNK], xs[s:s + DECODE_CHUNK]
            coords = torch.stack([(y.to(rgb.dtype) * 2 + 1) / H - 1,
                                  (x.to(rgb.dtype) * 2 + 1) / W - 1], -1)[None]
            point = self.model.point_features_at(coarse, guide_input, y, x)
            logits = self.model.decode(enc, coords, (H, W), point, coarse[0, 0, y, x][None])
            flat[y * W + x] = torch.sigmoid(logits[0].float())
        return prob

    def _amp(self):
        if self.autocast:
            return torch.autocast("cuda", dtype=torch.float16)
        return torch.autocast("cpu", enabled=False)

    @staticmethod
    def _check(cancel) -> None:
        if cancel is not None and cancel():
            raise Cancelled("refinement cancelled")


def _trim_heap() -> None:
    """Give freed heap memory back to the OS after each stage (glibc keeps it otherwise, and
    the fragments add up over thousands of tiles: +31 % peak memory from 5k² to 20k²)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc():
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _load_libc()


def _anchor(given_e, given_d, prev_e, prev_d, margin: int, ratio: int):
    """Coarse masks at pitches e and d (= e / ratio): the given mask, except inside the previous
    stages' corrections (see CHANGE_SHARE) where the previous map is kept."""
    k = 2 * margin + 1
    disagreement = F.avg_pool2d((given_e - prev_e).abs(), k, stride=1, padding=margin,
                                count_include_pad=False)
    changed = F.max_pool2d((disagreement > CHANGE_SHARE).float(), k, stride=1, padding=margin)
    changed_d = F.interpolate(changed, scale_factor=ratio, mode="nearest") if ratio > 1 else changed
    return torch.where(changed > 0, prev_e, given_e), torch.where(changed_d > 0, prev_d, given_d)


def _pool(x: torch.Tensor, pitch: int) -> torch.Tensor:
    return F.avg_pool2d(x, pitch) if pitch > 1 else x


def _binary_reader(mask: MaskSource, fg_threshold: float, foreground: int | None):
    """Box → float32 mask in [0, 1]: 0/255 and 0/1 masks, probabilities, or one label id."""

    def read(box: Box) -> np.ndarray:
        m = mask.read(box)
        if foreground is not None:
            return (m == foreground).astype(np.float32)
        if m.dtype == bool:
            return m.astype(np.float32)
        if np.issubdtype(m.dtype, np.floating):
            return np.clip(m, 0, 1).astype(np.float32)
        return (m > fg_threshold).astype(np.float32)

    return read


def _prepare_out(out, shape: tuple[int, int], dtype) -> object:
    if out is None:
        return np.zeros(shape, dtype=dtype)
    out_shape = tuple(int(s) for s in getattr(out, "shape", ()))
    if out_shape != shape:
        raise InputError(f"out has shape {out_shape}, but the mask is {shape}")
    return out


def open_inputs(image, coarse) -> tuple[ImageSource, MaskSource]:
    """The image and the coarse mask as tile readers; a clear error when their sizes differ."""
    img, mask = ImageSource.wrap(image), MaskSource.wrap(coarse)
    if (img.height, img.width) != (mask.height, mask.width):
        raise InputError(f"image is {img.height}×{img.width} but the coarse mask is "
                         f"{mask.height}×{mask.width}; they must match")
    return img, mask


def foreground_value(summary, dtype) -> int:
    """What a foreground pixel is written as: 255 into uint8 outputs of a 0/255 mask, else 1."""
    return 255 if summary.scale_255 and np.dtype(dtype) == np.uint8 else 1


def as_output(values: np.ndarray, dtype, fg_value: int) -> np.ndarray:
    """A bool decision in the output's dtype and foreground value."""
    return values.astype(dtype) * fg_value if fg_value != 1 else values


def refine_array(image, coarse, model: AIRM, *, device: torch.device,
                 settings: RefineSettings | None = None, out=None,
                 labels: str | int | Iterable[int] = "all",
                 progress: Callable[[int, int], None] | None = None,
                 cancel: Callable[[], bool] | None = None, **options):
    """The engine behind ``napari_airm.refine`` (see its docstring). ``options`` change single
    fields of ``settings`` (``RefineSettings``), e.g. ``tile=512`` or ``anchor=False`` (CRM's
    cascade, for comparisons)."""
    settings = (settings or RefineSettings()).replace(**options)
    img, mask = open_inputs(image, coarse)
    refiner = BinaryRefiner(model, device, settings, resolve_reach(settings.reach, img.height, img.width))
    shape = (mask.height, mask.width)
    tile = settings.tile
    summary = scan_mask(mask, tile)
    if summary.kind == "labels":
        target = _prepare_out(out, shape, mask.dtype)
        return refine_labels(refiner, img, mask, summary, target, labels, progress, cancel,
                             copy_input=True)
    target = _prepare_out(out, shape, bool)
    dtype = np.dtype(getattr(target, "dtype", bool))
    fg_value = foreground_value(summary, dtype)

    def write(box: Box, values: np.ndarray) -> None:
        y0, y1, x0, x1 = box
        target[y0:y1, x0:x1] = as_output(values, dtype, fg_value)

    if summary.empty or summary.full:
        # nothing to refine: no boundary in the whole mask; the result is the mask itself
        for tile_box in make_plan(*shape, tile=tile).tiles():
            y0, y1, x0, x1 = tile_box
            write(tile_box, np.full((y1 - y0, x1 - x0), summary.full))
        if progress:
            progress(1, 1)
        return target
    refiner.run(img, _binary_reader(mask, summary.threshold, None), mask.height, mask.width, write,
                progress, cancel)
    return target
