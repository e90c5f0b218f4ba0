"""Retrain widget: (image, corrected labels) pairs from open layers → a training folder →
a short fine-tune of the current model (in the background) → before/after scores → a model
the Refine widget offers, and uses only when the user presses "Use for Refine".
"""
from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from magicgui.widgets import (ComboBox, Container, FileEdit, LineEdit, ProgressBar,
                              PushButton, SpinBox)
from qtpy.QtWidgets import QListWidget, QVBoxLayout, QWidget
from superqt import QCollapsible

from . import _defaults as D
from . import _layers as L
from ._models import OTHER, check_model_folder, registry
from ._retrain_job import RetrainRequest, RetrainResult, check_text, finetune_config, run_retrain
from ._worker import JobControls, Outcome, avoid_llvm_clash, status_label

__all__ = ["RetrainWidget", "RetrainRequest", "RetrainResult", "finetune_config", "run_retrain"]

DEFAULT_WORKDIR = Path.home() / "napari-airm" / "finetune"


class RetrainWidget(JobControls, QWidget):
    """Fine-tune the model on masks the annotator corrected; register the result for Refine."""

    def __init__(self, napari_viewer):
        super().__init__()
        avoid_llvm_clash()  # before the first torch/timm import (model lists, training, refine)
        self.viewer = napari_viewer
        self.pairs: list[tuple[object, object]] = []
        self.new_model: str | None = None
        self.new_model_dir: Path | None = None
        self.check: dict | None = None
        self.image = L.name_choice("image", choices=L.layer_choices(self, "Image"))
        self.labels = L.name_choice("corrected labels", choices=L.layer_choices(self, "Labels"))
        self.add_button = PushButton(text="Add pair")
        self.remove_button = PushButton(text="Remove selected")
        self.pair_list = QListWidget()
        self.pair_list.setMaximumHeight(60)
        self.base_model = L.name_choice("start from", choices=lambda w: registry.choices())
        self.model_folder = FileEdit(label="model folder", mode="d", visible=False)
        self.workdir = FileEdit(label="work folder", mode="d", value=DEFAULT_WORKDIR,
                                tooltip="each run writes <work folder>/run-<time>/data (the pairs) "
                                        "and /train/model (the new model)")
        self.steps = SpinBox(label="steps", min=1, max=100_000, value=200)
        self.crop = SpinBox(label="crop", min=64, max=1024, step=32, value=224)
        self.batch = SpinBox(label="batch size", min=1, max=64, value=4)
        self.lr = LineEdit(label="learning rate", value="1e-4")
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda"], value="auto")
        self.train_button = PushButton(text="Train")
        self.start_button = self.train_button
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(min=0, max=100, value=0, label="progress")
        self.status = status_label()
        self.use_button = PushButton(text="Use for Refine", enabled=False,
                                     tooltip="make the new model the Refine widget's model")
        self.form = Container(widgets=[self.image, self.labels])
        pair_buttons = Container(widgets=[self.add_button, self.remove_button], layout="horizontal",
                                 labels=False)
        self.options = Container(widgets=[self.base_model, self.model_folder, self.steps])
        self.more_options = Container(widgets=[self.workdir, self.crop, self.batch, self.lr,
                                               self.device])
        more = QCollapsible("Training settings")
        more.addWidget(self.more_options.native)
        buttons = Container(widgets=[self.train_button, self.cancel_button, self.use_button],
                            layout="horizontal", labels=False)
        layout = QVBoxLayout(self)
        for w in (self.form.native, pair_buttons.native, self.pair_list, self.options.native, more,
                  buttons.native, self.progress.native, self.status.native):
            layout.addWidget(w)
        layout.addStretch(1)
        self.add_button.changed.connect(self.add_pair)
        self.remove_button.changed.connect(self._remove_selected)
        self.base_model.changed.connect(self._on_model_choice)
        self.train_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.use_button.changed.connect(self.use_for_refine)
        self._defaults = [
            D.DefaultChoice(self.image, lambda: D.image_default(D.layer_choices(self.image))),
            D.DefaultChoice(self.labels, lambda: D.corrected_default(D.layer_choices(self.labels)))]
        L.follow(self, napari_viewer, self.reset_choices, self.base_model.reset_choices)
        self.reset_choices()
        self._on_model_choice(self.base_model.value)

    def _on_model_choice(self, value):
        self.model_folder.visible = value == OTHER

    def reset_choices(self, *_):
        self.form.reset_choices()
        for choice in self._defaults:
            choice.refresh()
        alive = {id(L.unwrap(layer)) for layer in self.viewer.layers}
        self.pairs = [p for p in self.pairs if id(p[0]) in alive and id(p[1]) in alive]
        self._refresh_list()

    # -- pairs ---------------------------------------------------------------------------------
    def add_pair(self, *_) -> bool:
        from napari.layers import Image, Labels

        image, labels = self.image.value, self.labels.value
        try:
            if not isinstance(image, Image) or not isinstance(labels, Labels):
                raise L.LayerError("choose an image layer and the Labels layer with its corrected mask")
            L.check_same_size(image, labels)
        except ValueError as exc:
            self._fail(str(exc))
            return False
        if not any(p[0] is image and p[1] is labels for p in self.pairs):
            self.pairs.append((image, labels))
        self._refresh_list()
        return True

    def _remove_selected(self, *_) -> None:
        rows = sorted({i.row() for i in self.pair_list.selectedIndexes()}, reverse=True)
        for r in rows:
            del self.pairs[r]
        self._refresh_list()

    def _refresh_list(self) -> None:
        self.pair_list.clear()
        for image, labels in self.pairs:
            self.pair_list.addItem(f"{image.name}  ←  {labels.name}")

    # -- run -----------------------------------------------------------------------------------
    def make_request(self) -> RetrainRequest:
        if not self.pairs and not self.add_pair():
            raise L.LayerError("add at least one (image, corrected labels) pair")
        base = self.base_model.value
        base = check_model_folder(self.model_folder.value if base == OTHER else base)
        try:
            lr = float(self.lr.value)
        except ValueError:
            raise L.LayerError(f"learning rate '{self.lr.value}' is not a number (e.g. 1e-4)") from None
        if not 0 < lr < 1:
            raise L.LayerError(f"learning rate {lr} is out of range (0, 1)")
        workdir = Path(self.workdir.value).expanduser()
        run_dir = workdir / time.strftime("run-%Y%m%d-%H%M%S")
        k = 2
        while run_dir.exists():
            run_dir, k = workdir / f"{time.strftime('run-%Y%m%d-%H%M%S')}-{k}", k + 1
        pairs = [(L.safe_filename(f"{im.name}__{lab.name}"), L.level0(im), L.level0(lab))
                 for im, lab in self.pairs]
        return RetrainRequest(pairs=pairs, base_model=base, run_dir=run_dir, steps=int(self.steps.value),
                              crop=int(self.crop.value), batch_size=int(self.batch.value), lr=lr,
                              device=None if self.device.value == "auto" else self.device.value)

    # -- the job (JobControls runs it) ----------------------------------------------------
    cancelling_text = "stopping…"

    def starting_text(self, req: RetrainRequest) -> str:
        self.use_button.enabled = False  # the button always adopts the newest run's model
        return f"exporting {len(req.pairs)} pair(s) to {req.run_dir / 'data'}…"

    def job_function(self, req: RetrainRequest):
        return partial(run_retrain, req)

    def _on_progress(self, done: int, total: int, info=None) -> None:
        if isinstance(info, dict):
            self.status.value = f"step {done}/{total}, loss {info.get('total', float('nan')):.4f}"
        elif info:
            self.status.value = str(info)
        self._show_progress(done, total, f"AIRM retrain: {self.status.value}")

    def job_finished(self, req: RetrainRequest, outcome: Outcome) -> None:
        if outcome.cancelled:
            self.status.value = "training stopped; no model was registered"
            return
        result: RetrainResult = outcome.value
        train = result.train
        self.new_model = registry.register(train.model_dir, name=train.out_dir.parent.name)
        self.new_model_dir = train.model_dir
        self.check = result.check
        self.use_button.enabled = True
        self.progress.max = max(1, self.progress.max)
        self.progress.value = self.progress.max
        self.status.value = (f"trained {train.steps} steps in {self.seconds_since_click():.0f} s → "
                             f"model '{self.new_model}' ({train.model_dir}); "
                             f"{check_text(result.check)}. Refine keeps its model until you press "
                             f"'Use for Refine'.")

    def use_for_refine(self, *_) -> None:
        """The explicit step that makes the new model Refine's (never automatic)."""
        if self.new_model_dir is None:
            return
        registry.use(self.new_model_dir)
        self.use_button.enabled = False
        self.status.value = f"Refine now uses '{self.new_model}' ({self.new_model_dir})"

