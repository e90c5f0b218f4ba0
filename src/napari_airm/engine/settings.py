"""How a mask is refined, as one frozen object the API, the command line, the widget and batch
jobs hand down unchanged: a new option touches this file and the place that uses it."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .errors import InputError


@dataclass(frozen=True)
class RefineSettings:
    """Refinement options; ``RefineSettings()`` is the measured default.

    reach: how far the boundary may move from the given one — ``"auto"`` (a share of the image
        size, capped at half the local thickness of each object and gap; ``engine/reach.py``),
        a whole number of pixels, or None for no trust region (the network alone, everywhere).
    solve: the final boundary is a full-resolution graph cut on the uncertain band
        (``engine/solve.py``); False thresholds the network's probability at ½.
    keep: how strongly the cut keeps the given boundary (log-odds units; None: the measured
        default ``solve.GIVEN``, which keeps a good mask good). Lower for rough masks: the
        ``"rough"`` preset moves boundaries much more freely (docs/performance.md).
    tile: output tile side in pixels (bounds memory). dense: decode every pixel of every tile
        (the reference the fast path is tested against). passes: refine the result again.
    flips: average the network over 1, 2 or 4 mirrored views.
    global_side: side of the global stage's view. anchor: tile stages read the given mask
        outside the earlier stages' corrections (False: CRM's cascade, for comparisons).
    """

    reach: int | str | None = "auto"
    solve: bool = True
    keep: float | None = None
    tile: int = 1024
    dense: bool = False
    passes: int = 1
    flips: int = 1
    global_side: int = 512
    anchor: bool = True

    def __post_init__(self):
        from .reach import resolve_reach

        resolve_reach(self.reach, 1, 1)  # validates
        if isinstance(self.tile, bool) or int(self.tile) != self.tile or self.tile < 64 or self.tile % 16:
            raise InputError(f"tile must be a multiple of 16 and at least 64, got {self.tile!r}")
        if isinstance(self.passes, bool) or int(self.passes) != self.passes or self.passes < 1:
            raise InputError(f"passes must be a whole number of at least 1, got {self.passes!r}")
        if self.keep is not None and not (isinstance(self.keep, (int, float)) and not isinstance(self.keep, bool)
                                          and 0 <= self.keep < float("inf")):
            raise InputError(f"keep must be a number >= 0 (or None for the default), got {self.keep!r}")
        if self.flips not in (1, 2, 4):
            raise InputError(f"flips must be one of [1, 2, 4], got {self.flips!r}")

    def replace(self, **changes) -> "RefineSettings":
        """A copy with some options changed; an unknown option is a clear error."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise InputError(f"unknown refinement option(s) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **changes) if changes else self


ROUGH_KEEP = 1.0  # docs/tuning/grid2.md: DUTS val perturbed 91.70 / 69.08 against 87.84 / 63.32

PRESETS = {
    "default": RefineSettings(),
    # the network alone: no trust region, no boundary solve (the paper's kind of numbers)
    "network": RefineSettings(reach=None, solve=False),
    # a rough mask: the cut follows the network and the image far more than the given boundary
    "rough": RefineSettings(keep=ROUGH_KEEP),
}
