"""Screenshots of the napari-airm widgets for docs/plugin.md, from the real plugin: the AIRM
dock (tabs Refine / Evaluate / Retrain) in a 1366×768 window, the sample opened after docking
and the widgets left on their default layers (what a new user sees).

    xvfb-run -a python make_screenshots.py OUT_DIR [MODEL_FOLDER]
"""
import sys
import time
from pathlib import Path

import numpy as np
import napari
from qtpy.QtWidgets import QApplication

from napari_airm.widgets import _layers
from napari_airm.widgets._models import OTHER

out = Path(sys.argv[1])
model = Path(sys.argv[2]) if len(sys.argv) > 2 else None
out.mkdir(parents=True, exist_ok=True)
app = None


def wait(cond, timeout=1800):
    t = time.time()
    while not cond():
        app.processEvents()
        time.sleep(0.05)
        if time.time() - t > timeout:
            raise TimeoutError
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)


def shot(viewer, name):
    for _ in range(30):
        app.processEvents()
        time.sleep(0.02)
    viewer.screenshot(str(out / name), canvas_only=False, flash=False)
    print("saved", out / name, flush=True)


viewer = napari.Viewer(show=True)
app = QApplication.instance()
viewer.window._qt_window.resize(1366, 768)
_d, airm = viewer.window.add_plugin_dock_widget("napari-airm", "AIRM")
viewer.open_sample("napari-airm", "airm-sample")
refine, ev, rt = airm.refine, airm.evaluate, airm.retrain
assert refine.coarse.value.name == "coarse mask" and ev.gt.value.name == "ground truth"
refine.device.value = "cpu"
if model is not None:
    refine.model.value = OTHER
    refine.model_folder.value = model
viewer.layers["coarse mask"].opacity = 0.45

refine.run()
wait(lambda: not refine.running)
print(refine.status.value, flush=True)
res = viewer.layers["coarse mask refined"]
coarse_layer = viewer.layers["coarse mask"]
coarse_layer.opacity, coarse_layer.contour = 0.9, 3
res.opacity, res.contour = 1.0, 3
# the refined layer's own (contrasting) colours are kept; contours show both boundaries
# zoom onto the stretch of boundary where the coarse mask is most wrong (thin spikes)
import cv2
gt = viewer.layers["ground truth"].data > 0
wrong = (gt != (coarse_layer.data > 0)).astype(np.float32)
score = cv2.boxFilter(wrong, -1, (500, 500))
cy, cx = np.unravel_index(np.argmax(score), score.shape)
viewer.camera.center = (float(cy), float(cx))
viewer.camera.zoom = 1.3
shot(viewer, "refine.png")
coarse_layer.contour, coarse_layer.opacity = 0, 0.4
coarse_layer.visible = False
res.contour, res.opacity = 0, 0.5

# evaluate: refined vs ground truth, with the coarse mask for the gain
airm.tabs.setCurrentIndex(1)
assert ev.pred.value is _layers.unwrap(res) and ev.coarse.value.name == "coarse mask"  # defaults
ev.run()
wait(lambda: not ev.running)
viewer.reset_view()
shot(viewer, "evaluate.png")

# retrain: the refined (and, in real use, corrected) labels as training pairs
airm.tabs.setCurrentIndex(2)
rt.labels.value = _layers.unwrap(viewer.layers["ground truth"])  # stands in for corrected labels
rt.add_pair()
if model is not None:
    rt.base_model.value = OTHER
    rt.model_folder.value = model
rt.workdir.value = out.parent / "finetune-screens"
rt.steps.value, rt.crop.value, rt.batch.value = 20, 224, 4
rt.device.value = "cpu"
rt.run()
wait(lambda: not rt.running)
print(rt.status.value, flush=True)
shot(viewer, "retrain.png")
rt.use_button.native.click()  # the explicit step: Refine now uses the new model
airm.tabs.setCurrentIndex(0)
shot(viewer, "refine-new-model.png")

viewer.close()
