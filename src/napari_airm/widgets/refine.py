"""Refine widget: image + coarse Labels/Shapes → refined Labels (new layer or one undoable edit).

The GUI thread only reads choices and applies the finished result; ``run_refine``
(``_refine_job``, the worker function, also usable synchronously) calls ``napari_airm.api.refine``.
"""
from __future__ import annotations

from functools import partial

import numpy as np
from magicgui.widgets import (CheckBox, ComboBox, Container, FileEdit, LineEdit, ProgressBar,
                              PushButton, SpinBox)
from qtpy.QtWidgets import QVBoxLayout, QWidget
from superqt import QCollapsible

from ..engine.settings import ROUGH_KEEP, RefineSettings
from . import _defaults as D
from . import _layers as L
from . import _shortcuts as keys
from ._cluster_job import (ClusterRequest, ClusterResult, cancelled_text, check_new_store,
                           run_on_cluster, store_behind)
from ._colors import contrasting_colormap
from ._models import OTHER, check_model_folder, registry
from ._refine_job import (IN_PLACE, NEW, TILES, RefineRequest, RefineResult, describe_progress,
                          run_refine)
from ._worker import JobControls, Outcome, avoid_llvm_clash, status_label

__all__ = ["RefineWidget", "RefineRequest", "RefineResult", "run_refine", "NEW", "IN_PLACE",
           "ALL", "SELECTED"]

ALL, SELECTED = "all ids", "selected id"


class RefineWidget(JobControls, QWidget):
    """Refine a coarse mask (Labels or Shapes) of an image into a boundary-accurate Labels layer."""

    def __init__(self, napari_viewer):
        super().__init__()
        avoid_llvm_clash()  # before the first torch/timm import (model lists, training, refine)
        self.viewer = napari_viewer
        self.last_result: RefineResult | None = None
        self.image = L.name_choice("image", choices=L.layer_choices(self, "Image"))
        self.coarse = L.name_choice("coarse mask", choices=L.layer_choices(self, "Labels", "Shapes"),
                                    tooltip="a Labels layer, or a Shapes layer (rasterised, one "
                                            "id per shape)")
        self.which = ComboBox(label="objects", choices=[ALL, SELECTED], value=ALL,
                              tooltip="all ids, or only the selected one (the Labels layer's "
                                      f"current label; for Shapes, the selected shapes). "
                                      f"{keys.REFINE_SELECTED}: refine the selected object")
        self.model = L.name_choice("model", choices=lambda w: registry.choices())
        self.model_folder = FileEdit(label="model folder", mode="d", visible=False)
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda"], value="auto")
        self.output = ComboBox(label="output", choices=[NEW, IN_PLACE], value=NEW,
                               tooltip="a new Labels layer '<coarse> refined', or the changed "
                                       "pixels written into the coarse layer as one undoable edit")
        self.rough = CheckBox(text="rough mask (move freely)", value=False,
                              tooltip="off: a good mask stays good (the given boundary is kept "
                                      "unless the model is sure); on: the boundary follows the "
                                      "model and the image edges (the 'rough' preset)")
        self.form = Container(widgets=[self.image, self.coarse, self.which, self.model,
                                       self.model_folder, self.device, self.output, self.rough])
        self.reach = SpinBox(label="reach (px)", min=0, max=100000, value=0,
                             tooltip="how far the boundary may move from the coarse one; outside "
                                     "it the coarse mask stays exactly as drawn. 0 = automatic: a "
                                     "share of the image size, at most half of each object's "
                                     "local thickness")
        self.solve = CheckBox(text="exact boundary (graph cut)", value=True,
                              tooltip="the final boundary follows image edges: the network's "
                                      "probability, colour models and contrast, solved by min-cut")
        self.tile = SpinBox(label="tile size", min=256, max=8192, step=256, value=1024,
                            tooltip="full-resolution tile edge in pixels (memory grows with it)")
        self.dense = CheckBox(text="dense (decode every pixel)", value=False,
                              tooltip="slower, for checking: by default only the uncertain "
                                      "boundary band is decoded")
        self.passes = SpinBox(label="passes", min=1, max=4, value=1,
                              tooltip="2 refines the result once more: sharper boundaries "
                                      "on photos (+0.3 to +0.9 mBA on DUTS val) for twice the "
                                      "last stage's time")
        self.flips = ComboBox(label="flip averaging", value=1,
                              choices=[("off", 1), ("left-right (2× time)", 2),
                                       ("4 flips (4× time)", 4)],
                              tooltip="average the model over mirrored views of every tile: "
                                      "+0.1 to +0.8 mBA on DUTS val photos")
        self.scheduler = LineEdit(label="scheduler", value="",
                                  tooltip="empty: refine in this process; 'local': a dask cluster "
                                          "on this machine; or a scheduler address such as "
                                          "tcp://host:8786. Needs zarr-backed layers and an "
                                          "output store")
        self.store = FileEdit(label="output store", mode="w", filter="*.zarr",
                              tooltip="with a scheduler: the new NAME.zarr the workers write the "
                                      "result into (an existing store is never replaced)")
        self.advanced = Container(widgets=[self.reach, self.solve, self.tile, self.passes,
                                           self.flips, self.dense, self.scheduler, self.store])
        self.run_button = PushButton(text="Refine", tooltip=f"{keys.REFINE_ALL} in the viewer: refine "
                                                            f"the whole mask")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.start_button = self.run_button
        self.progress = ProgressBar(min=0, max=100, value=0, label="progress")
        self._where = ""  # " on <scheduler>" while a cluster run shows its progress
        self.last_layer = None  # the layer the last run made (new layer) or changed (in place)
        self.last_mode: str | None = None
        self._history_mark: int | None = None  # the in-place layer's undo count after the run
        self.status = status_label()
        self.buttons = Container(widgets=[self.run_button, self.cancel_button], layout="horizontal",
                                 labels=False)

        collapsible = QCollapsible("Advanced")
        collapsible.addWidget(self.advanced.native)
        layout = QVBoxLayout(self)
        for w in (self.form.native, collapsible, self.buttons.native, self.progress.native,
                  self.status.native):
            layout.addWidget(w)
        layout.addStretch(1)

        self.model.changed.connect(self._on_model_choice)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self._defaults = [
            D.DefaultChoice(self.image, lambda: D.image_default(D.layer_choices(self.image))),
            D.DefaultChoice(self.coarse, lambda: D.coarse_default(D.layer_choices(self.coarse)))]
        L.follow(self, napari_viewer, self.reset_choices, self._on_models_changed)
        registry.chosen.connect(self._on_model_adopted)
        self.destroyed.connect(lambda *_: registry.chosen.disconnect(self._on_model_adopted))
        keys.bind(self, napari_viewer, {keys.REFINE_SELECTED: self.refine_selected_object,
                                        keys.REFINE_ALL: self.refine_whole_mask,
                                        keys.UNDO_REFINEMENT: self.undo_last_refinement})
        self.reset_choices()
        self._on_model_choice(self.model.value)

    # -- choices -------------------------------------------------------------------------------
    def reset_choices(self, *_):
        self.form.reset_choices()
        for choice in self._defaults:
            choice.refresh()

    def _on_model_choice(self, value):
        self.model_folder.visible = value == OTHER

    def _on_models_changed(self):
        """A retrained model is offered, never chosen silently (Retrain's 'Use for Refine' does)."""
        self.model.reset_choices()

    def _on_model_adopted(self, folder) -> None:
        self.model.reset_choices()
        self.model.value = folder
        self.status.value = f"model for Refine: {folder}"

    # -- shortcuts -------------------------------------------------------------------------
    def refine_selected_object(self) -> None:
        self.which.value = SELECTED
        self.run()

    def refine_whole_mask(self) -> None:
        self.which.value = ALL
        self.run()

    def undo_last_refinement(self) -> bool:
        """In place: undo the edit on the coarse layer; new layer: remove the layer it made."""
        layer, self.last_layer = self.last_layer, None
        if layer is None or self.running:
            return False
        if self.last_mode == IN_PLACE:
            if _history_length(layer) != self._history_mark:
                self.status.value = (f"'{layer.name}' was edited after the refinement: use Ctrl+Z "
                                     f"on it to step back")
                return False
            layer.undo()
            self.status.value = f"undid the refinement of '{layer.name}'"
        elif layer in [L.unwrap(x) for x in self.viewer.layers]:
            self.viewer.layers.remove(layer.name)
            self.status.value = f"removed '{layer.name}'"
        else:
            return False
        return True

    # -- run -----------------------------------------------------------------------------------
    def settings(self) -> RefineSettings:
        """The Advanced choices as the engine's settings (everything else stays default)."""
        return RefineSettings(reach=int(self.reach.value) or "auto", solve=bool(self.solve.value),
                              keep=ROUGH_KEEP if self.rough.value else None, tile=int(self.tile.value), dense=bool(self.dense.value),
                              passes=int(self.passes.value), flips=int(self.flips.value))

    def make_request(self) -> RefineRequest:
        """Check the choices and collect what the worker needs (a clear error otherwise)."""
        from napari.layers import Image, Labels, Shapes

        image, coarse = self.image.value, self.coarse.value
        if not isinstance(image, Image):
            raise L.LayerError("choose an image layer (open an image or the napari-airm sample)")
        if not isinstance(coarse, (Labels, Shapes)):
            raise L.LayerError("choose a coarse mask: a Labels layer or a Shapes layer")
        hw = L.check_same_size(image, coarse)
        model = self.model.value
        if model == OTHER:
            model = check_model_folder(self.model_folder.value)
        elif model is not None:
            model = check_model_folder(model)
        if self.scheduler.value.strip():
            return self.cluster_request(image, coarse, model)
        req = RefineRequest(image=L.level0(image), model=model, settings=self.settings(),
                            mode=self.output.value,
                            device=None if self.device.value == "auto" else self.device.value,
                            source_name=coarse.name,
                            source_colormap=getattr(coarse, "colormap", None),
                            layer_kwargs={"scale": tuple(image.scale)[-2:],
                                          "translate": tuple(image.translate)[-2:]})
        if isinstance(coarse, Shapes):
            if len(coarse.data) == 0:
                raise L.LayerError(f"the Shapes layer '{coarse.name}' is empty: draw a rough outline")
            if self.output.value == IN_PLACE:
                raise L.LayerError("a Shapes layer cannot hold the result: choose output 'new layer'")
            req.make_coarse = partial(L.rasterise_shapes, coarse, hw, image)
            req.dtype = np.uint8 if len(coarse.data) < 256 else np.uint16
            if self.which.value == SELECTED:
                req.labels = L.selected_shape_ids(coarse)
                if not req.labels:
                    raise L.LayerError(f"no shape is selected in '{coarse.name}': select one or "
                                       f"choose 'all ids'")
        else:
            req.coarse = L.level0(coarse)
            req.dtype = req.coarse.dtype if np.issubdtype(req.coarse.dtype, np.integer) else np.uint8
            if self.which.value == SELECTED:
                req.labels = int(coarse.selected_label)
            if self.output.value == IN_PLACE:
                L.check_in_place(coarse)
                req.target, req.snapshot = coarse, np.array(coarse.data, copy=True)
                req.coarse = req.snapshot  # the run sees the layer as it was when it started
        return req

    def cluster_request(self, image, coarse, model) -> ClusterRequest:
        """A scheduler's workers read the layers' zarr stores and write a new one."""
        if self.output.value == IN_PLACE or self.which.value == SELECTED:
            raise L.LayerError("a scheduler refines the whole mask into a new layer: choose "
                               "objects 'all ids' and output 'new layer'")
        return ClusterRequest(image_path=store_behind(image, "image"),
                              mask_path=store_behind(coarse, "coarse mask"),
                              out_path=check_new_store(self.store.line_edit.value),
                              scheduler=self.scheduler.value.strip(), model=model,
                              settings=self.settings(),
                              device=None if self.device.value == "auto" else self.device.value,
                              source_name=coarse.name,
                              source_colormap=getattr(coarse, "colormap", None),
                              layer_kwargs={"scale": tuple(image.scale)[-2:],
                                            "translate": tuple(image.translate)[-2:]})

    # -- the job (JobControls runs it) ----------------------------------------------------
    def starting_text(self, req) -> str:
        self._where = f" on {req.scheduler}" if isinstance(req, ClusterRequest) else ""
        return f"refining{self._where}…"

    def job_function(self, req):
        return partial(run_on_cluster if isinstance(req, ClusterRequest) else run_refine, req)

    def _on_progress(self, done: int, total: int, unit=None) -> None:
        text = describe_progress(done, total, unit or TILES)
        self.status.value = f"{text}{self._where} · {self.seconds_since_click():.0f} s"
        self._show_progress(done, total, f"AIRM refine: {text}")

    def job_finished(self, req, outcome: Outcome) -> None:
        if outcome.cancelled:
            self.progress.value = 0
            self.status.value = (cancelled_text(req.out_path) if isinstance(req, ClusterRequest)
                                 else "cancelled: nothing was changed")
        elif isinstance(req, ClusterRequest):
            self.apply_store(req, outcome.value)
        else:
            self.apply(req, outcome.value)

    def apply_store(self, req: ClusterRequest, result: ClusterResult) -> None:
        """Open the store the workers wrote as a lazy multiscale Labels layer."""
        name = L.unique_name(self.viewer, f"{req.source_name} refined")
        layer = L.unwrap(self.viewer.add_labels(result.levels, name=name, multiscale=True,
                                                **req.layer_kwargs))
        layer.colormap = contrasting_colormap(req.source_colormap, [1])
        self.last_result, self.last_mode, self.last_layer = result, NEW, layer
        self.status.value = (f"refined '{req.source_name}' on {req.scheduler} → '{name}' "
                             f"({result.out_path}) in {timing_text(self.seconds_since_click(), result)}")
        self.progress.max = max(1, self.progress.max)
        self.progress.value = self.progress.max

    def apply(self, req: RefineRequest, result: RefineResult) -> None:
        """Put a finished result into the viewer (GUI thread); report the wall time from the
        click to the result on screen, model loading included."""
        self.last_result, self.last_mode = result, req.mode
        if req.mode == IN_PLACE:
            n = L.apply_in_place(req.target, result.indices, result.values)
            self.last_layer = req.target if n else None
            self._history_mark = _history_length(req.target)
            what = (f"refined '{req.source_name}' in place: {n} pixels changed "
                    f"(Ctrl+Z or {keys.UNDO_REFINEMENT} undoes it)")
        else:
            name = L.unique_name(self.viewer, f"{req.source_name} refined")
            layer = L.unwrap(self.viewer.add_labels(result.labels, name=name, **req.layer_kwargs))
            layer.colormap = contrasting_colormap(req.source_colormap, L.label_ids(result.labels))
            self.last_layer = layer
            what = f"refined '{req.source_name}' → '{name}'"
        self.status.value = f"{what} in {timing_text(self.seconds_since_click(), result)}"
        self.progress.max = max(1, self.progress.max)
        self.progress.value = self.progress.max


def _history_length(layer) -> int | None:
    """How many edits the layer can undo (napari keeps no public count; None if unknown)."""
    history = getattr(layer, "_undo_history", None)
    return None if history is None else len(history)


def timing_text(wall: float, result: RefineResult) -> str:
    """What the user waited, and how much of it was loading the model."""
    return f"{wall:.1f} s (click to result; loading the model {result.load_seconds:.1f} s)"

