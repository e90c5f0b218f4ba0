"""napari-airm: refine coarse masks of ultra-high-resolution images with AIRM.

    import napari_airm as airm
    mask = airm.refine(image, coarse)
"""
from __future__ import annotations

import os as _os

# Torch's OpenMP threads spin while they wait. Beside napari's GUI thread, a worker thread or a
# second process that is fatal on a small CPU (measured here: LIIF decoding 10x slower on 2
# busy cores); passive waiting costs nothing when the CPU is free. Set before torch loads; a
# value the user set wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

_LAZY = {
    "refine": "api", "refine_many": "api", "evaluate": "api", "train": "api",
    "load_model": "api", "build_model": "model", "save_model": "model",
}


def __getattr__(name: str):
    """Import heavy modules (torch, timm) only when the public API is first used."""
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'napari_airm' has no attribute {name!r}")


__all__ = ["refine", "refine_many", "evaluate", "train", "load_model", "build_model", "save_model",
           "__version__"]
