"""Refine widget: image + coarse Labels/Shapes → refined Labels (new layer or one undoable edit).

The GUI thread only reads choices and applies the finished result; ``run_refine``
(``_refine_job``, the worker function, also usable synchronously) calls ``napari_airm.api.refine``.
"""
from __future__ import annotations

from functools import partial

import numpy as np
from magicgui.widgets import (CheckBox, ComboBox, Container, FileEdit, Label, ProgressBar,
                              PushButton, RadioButtons, SpinBox)
from qtpy.QtWidgets import QVBoxLayout, QWidget
from superqt import QCollapsible

from ..engine.settings import ROUGH_KEEP, RefineSettings
from . import _layers as L
from ._models import OTHER, check_model_folder, registry
from ._refine_job import IN_PLACE, NEW, RefineRequest, RefineResult, run_refine
from ._worker import JobControls, Outcome, avoid_llvm_clash

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
        self.image = ComboBox(label="image", choices=self._image_choices)
        self.coarse = ComboBox(label="coarse mask", choices=self._coarse_choices,
                               tooltip="a Labels layer, or a Shapes layer (rasterised, one id per shape)")
        self.which = RadioButtons(label="objects", choices=[ALL, SELECTED], value=ALL,
                                  orientation="horizontal")
        self.model = ComboBox(label="model", choices=lambda w: registry.choices())
        self.model_folder = FileEdit(label="model folder", mode="d", visible=False)
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda"], value="auto")
        self.output = RadioButtons(label="output", choices=[NEW, IN_PLACE], value=NEW,
                                   orientation="horizontal")
        self.rough = CheckBox(text="the coarse mask is rough (move boundaries freely)", value=False,
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
        self.solve = CheckBox(text="exact boundary (graph cut at full resolution)", value=True,
                              tooltip="the final boundary follows image edges: the network's "
                                      "probability, colour models and contrast, solved by min-cut")
        self.tile = SpinBox(label="tile size", min=256, max=8192, step=256, value=1024,
                            tooltip="full-resolution tile edge in pixels (memory grows with it)")
        self.dense = CheckBox(text="dense: decode every pixel (slower; default decodes only the "
                                   "boundary band)", value=False)
        self.passes = SpinBox(label="passes", min=1, max=4, value=1,
                              tooltip="2 refines the result once more: sharper boundaries "
                                      "on photos (+0.3 to +0.9 mBA on DUTS val) for twice the "
                                      "last stage's time")
        self.flips = ComboBox(label="flip averaging", value=1,
                              choices=[("off", 1), ("left-right (2x time)", 2),
                                       ("4 flips (4x time)", 4)],
                              tooltip="average the model over mirrored views of every tile: "
                                      "+0.1 to +0.8 mBA on DUTS val photos")
        self.advanced = Container(widgets=[self.reach, self.solve, self.tile, self.passes,
                                           self.flips, self.dense])
        self.run_button = PushButton(text="Refine")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.start_button = self.run_button
        self.progress = ProgressBar(min=0, max=100, value=0, label="progress")
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
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
        L.follow(self, napari_viewer, self.reset_choices, self._on_models_changed)
        self.reset_choices()
        self._on_model_choice(self.model.value)

    # -- choices -------------------------------------------------------------------------------
    def _image_choices(self, _w=None):
        from napari.layers import Image

        return L.layers_of(self.viewer, (Image,))

    def _coarse_choices(self, _w=None):
        from napari.layers import Labels, Shapes

        return L.layers_of(self.viewer, (Labels, Shapes))

    def reset_choices(self, *_):
        self.form.reset_choices()

    def _on_model_choice(self, value):
        self.model_folder.visible = value == OTHER

    def _on_models_changed(self):
        self.model.reset_choices()
        registered = registry.registered()
        if registered:  # a freshly retrained model is what the user wants next
            self.model.value = list(registered.values())[-1]
            self.status.value = f"new model available: {list(registered)[-1]}"

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
        req = RefineRequest(image=L.level0(image), model=model, settings=self.settings(),
                            mode=self.output.value,
                            device=None if self.device.value == "auto" else self.device.value,
                            source_name=coarse.name,
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

    # -- the job (JobControls runs it) ----------------------------------------------------
    def starting_text(self, req: RefineRequest) -> str:
        return "refining…"

    def job_function(self, req: RefineRequest):
        return partial(run_refine, req)

    def _on_progress(self, done: int, total: int, _info=None) -> None:
        self._show_progress(done, total)
        self.status.value = f"refining… {done}/{total}"

    def job_finished(self, req: RefineRequest, outcome: Outcome) -> None:
        if outcome.cancelled:
            self.progress.value = 0
            self.status.value = "cancelled: nothing was changed"
        else:
            self.apply(req, outcome.value)

    def apply(self, req: RefineRequest, result: RefineResult) -> None:
        """Put a finished result into the viewer (GUI thread)."""
        self.last_result = result
        if req.mode == IN_PLACE:
            n = L.apply_in_place(req.target, result.indices, result.values)
            self.status.value = (f"refined '{req.source_name}' in place in {result.seconds:.1f} s: "
                                 f"{n} pixels changed (Ctrl+Z undoes it)")
        else:
            name = L.unique_name(self.viewer, f"{req.source_name} refined")
            self.viewer.add_labels(result.labels, name=name, **req.layer_kwargs)
            self.status.value = f"refined '{req.source_name}' → '{name}' in {result.seconds:.1f} s"
        self.progress.value = self.progress.max

