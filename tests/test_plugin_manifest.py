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
    widgets = [w.display_name for w in manifest.contributions.widgets]
    assert widgets == ["AIRM", "Refine", "Evaluate", "Retrain"]  # `napari -w napari-airm` opens the first
    assert manifest.contributions.readers[0].filename_patterns == ["*.zarr"]
    writer = manifest.contributions.writers[0]
    assert list(writer.layer_types) == ["labels"]
    assert set(writer.filename_extensions) == {".zarr", ".tif", ".tiff"}
    segment = {item.command for item in manifest.contributions.menus["napari/layers/segment"]}
    assert segment == {c.command for c in manifest.contributions.widgets}
    assert manifest.contributions.sample_data[0].key == "airm-sample"
    # every command resolves to an importable Python object
    PluginManifest.from_distribution("napari-airm").validate_imports()


def test_manifest_lives_at_root_and_in_package():
    root_file = ROOT / "napari.yaml"
    pkg_file = ROOT / "src" / "napari_airm" / "napari.yaml"
    assert root_file.is_file() and pkg_file.exists()
    assert pkg_file.resolve() == root_file.resolve()


def test_npe2_validates_the_manifest():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-airm"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "valid" in out.stdout, out.stdout + out.stderr


def test_widgets_are_in_the_layers_segment_menu(make_napari_viewer):
    """napari shows the contribution under Layers ▸ Segment (the app-model menu registry)."""
    from napari._app_model import get_app_model

    make_napari_viewer()
    items = get_app_model().menus.get_menu("napari/layers/segment")
    titles = [getattr(item, "command", item).title for item in items]
    for name in ("AIRM", "Refine", "Evaluate", "Retrain"):
        assert any(name in title and "napari-airm" in title for title in titles), titles


def test_dock_opens_all_three_widgets(make_napari_viewer):
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-airm")  # what `-w napari-airm` does
    assert type(widget).__name__ == "AIRMWidget"
    tabs = [widget.tabs.tabText(i) for i in range(widget.tabs.count())]
    assert tabs == ["Refine", "Evaluate", "Retrain"]
    assert [type(w).__name__ for w in (widget.refine, widget.evaluate, widget.retrain)] == \
        ["RefineWidget", "EvaluateWidget", "RetrainWidget"]


@pytest.mark.parametrize("name, cls", [("AIRM", "AIRMWidget"), ("Refine", "RefineWidget"),
                                       ("Evaluate", "EvaluateWidget"), ("Retrain", "RetrainWidget")])
def test_widgets_open_through_manifest(make_napari_viewer, name, cls):
    viewer = make_napari_viewer()
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-airm", name)
    assert type(widget).__name__ == cls
    assert len(widget.viewer.layers) == 0  # napari hands plugins a proxy of the viewer


def test_sample_data_through_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-airm", "airm-sample")
    names = [layer.name for layer in viewer.layers]
    assert names == ["AIRM sample image", "ground truth", "coarse mask"]  # the mask to refine on top
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
            "[v.window.add_plugin_dock_widget('napari-airm', n) for n in ('AIRM', 'Refine', 'Evaluate', 'Retrain')]; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr[-2000:]
