"""The napari plugin: manifest found by npe2, widgets and sample data open through it."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

ROOT = Path(__file__).resolve().parents[1]


def test_manifest_found_and_valid():
    from npe2 import PluginManager, PluginManifest

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-airm")
    assert {w.display_name for w in manifest.contributions.widgets} == {"Refine", "Evaluate", "Retrain"}
    assert manifest.contributions.readers[0].filename_patterns == ["*.zarr"]
    assert manifest.contributions.sample_data[0].key == "airm-sample"
    # every command resolves to an importable Python object
    PluginManifest.from_distribution("napari-airm").validate_imports()


def test_manifest_lives_at_root_and_in_package():
    root_file = ROOT / "napari.yaml"
    pkg_file = ROOT / "src" / "napari_airm" / "napari.yaml"
    assert root_file.is_file() and pkg_file.exists()
    assert pkg_file.resolve() == root_file.resolve()


@pytest.mark.parametrize("name, cls", [("Refine", "RefineWidget"), ("Evaluate", "EvaluateWidget"),
                                       ("Retrain", "RetrainWidget")])
def test_widgets_open_through_manifest(make_napari_viewer, name, cls):
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-airm", name)
    assert type(widget).__name__ == cls
    assert len(widget.viewer.layers) == 0  # napari hands plugins a proxy of the viewer


def test_sample_data_through_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-airm", "airm-sample")
    names = [layer.name for layer in viewer.layers]
    assert names[:2] == ["AIRM sample image", "coarse mask"]
    image, coarse = viewer.layers["AIRM sample image"], viewer.layers["coarse mask"]
    assert image.rgb and image.data.shape == (3072, 4096, 3)
    assert coarse.data.shape == (3072, 4096) and coarse.data.max() == 2


def test_model_listing_mirrors_model_io(tmp_path):
    """The widgets list models without importing torch; their rules equal napari_airm.model.io."""
    from napari_airm.model import io
    from napari_airm.widgets import _models

    try:
        expected = io.bundled_models_dir()
    except FileNotFoundError:
        expected = None
    assert _models.bundled_dir() == expected
    assert _models.DEFAULT_MODEL == io.DEFAULT_MODEL
    (tmp_path / "config.yaml").write_text("format: napari-airm-model\n")
    assert _models.is_model_folder(tmp_path) == io.is_model_dir(tmp_path) is False
    (tmp_path / "weights.safetensors").write_bytes(b"")
    assert _models.is_model_folder(tmp_path) == io.is_model_dir(tmp_path) is True


def test_opening_widgets_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, napari; v = napari.Viewer(show=False); "
            "[v.window.add_plugin_dock_widget('napari-airm', n) for n in ('Refine', 'Evaluate', 'Retrain')]; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr[-2000:]
