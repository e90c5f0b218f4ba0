"""The models the widgets offer: the bundled ones plus those registered this session (retrained).

The Retrain widget calls :func:`register`; every open Refine widget listens to
``registry.changed`` and refreshes its model list, and switches to a model only when the user
asks for it (``registry.use``, Retrain's "Use for Refine").
"""
from __future__ import annotations

from pathlib import Path

from psygnal import Signal

OTHER = "other folder…"
DEFAULT_MODEL = "airm-default"

# Listing models must not import torch (seconds, on the GUI thread, when a widget opens), so the
# two rules of napari_airm.model.io are mirrored here; tests check that they agree.


def bundled_dir() -> Path | None:
    """``napari_airm.model.io.bundled_models_dir()`` without importing torch (None if absent)."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "_models", package.parent.parent / "models"):
        if candidate.is_dir():
            return candidate
    return None


def is_model_folder(path) -> bool:
    """``napari_airm.model.is_model_dir`` without importing torch."""
    p = Path(path)
    return (p / "config.yaml").is_file() and (p / "weights.safetensors").is_file()


class ModelRegistry:
    """Bundled models (``napari_airm.model.io.bundled_models_dir``) + registered model folders."""

    changed = Signal()  # the list changed (a model was registered)
    chosen = Signal(object)  # the user asked Refine to use this model folder

    def __init__(self) -> None:
        self._registered: dict[str, Path] = {}

    def bundled(self) -> dict[str, Path]:
        root = bundled_dir()
        if root is None:
            return {}
        found = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and is_model_folder(p)}
        # the default first
        return dict(sorted(found.items(), key=lambda kv: kv[0] != DEFAULT_MODEL))

    def registered(self) -> dict[str, Path]:
        return dict(self._registered)

    def choices(self) -> list[tuple[str, object]]:
        """(label, folder) pairs for a ComboBox: registered (newest first), bundled, 'other'."""
        items = [(f"{name} (retrained)", path) for name, path in reversed(self._registered.items())]
        items += [(f"{name} (bundled)", path) for name, path in self.bundled().items()]
        items.append((OTHER, OTHER))
        return items

    def register(self, folder: str | Path, name: str | None = None) -> str:
        """Offer ``folder`` (a model folder) in every Refine widget; returns its display name."""
        folder = Path(folder).resolve()
        if not is_model_folder(folder):
            raise ValueError(f"{folder} is not a napari-airm model folder "
                             f"(it needs config.yaml and weights.safetensors)")
        base = name or (folder.parent.name if folder.name == "model" else folder.name)
        label, k = base, 2
        while label in self._registered and self._registered[label] != folder:
            label, k = f"{base}-{k}", k + 1
        self._registered[label] = folder
        try:
            self.changed.emit()
        except Exception:  # noqa: BLE001 - a closed widget must not undo the registration
            import logging

            logging.getLogger("napari_airm.widgets").exception("refreshing model lists failed")
        return label


    def use(self, folder: str | Path) -> None:
        """Make ``folder`` the model of every open Refine widget (an explicit user action)."""
        folder = Path(folder).resolve()
        if folder not in self._registered.values():
            self.register(folder)
        self.chosen.emit(folder)


registry = ModelRegistry()


def check_model_folder(folder) -> Path:
    """A clear ValueError unless ``folder`` is a model folder."""
    if folder in (None, "", OTHER):
        raise ValueError("choose a model folder (one with config.yaml and weights.safetensors)")
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ValueError(f"model folder {path} does not exist")
    if not is_model_folder(path):
        raise ValueError(f"{path} is not a napari-airm model folder: it needs config.yaml and "
                         f"weights.safetensors (a training run keeps its model in <run>/model)")
    return path
