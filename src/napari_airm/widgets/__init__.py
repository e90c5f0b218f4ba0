"""napari widgets: thin front ends over ``napari_airm.api`` (refine, evaluate, retrain)."""
from .dock import AIRMWidget
from .evaluate import EvaluateWidget
from .refine import RefineWidget
from .retrain import RetrainWidget

__all__ = ["AIRMWidget", "RefineWidget", "EvaluateWidget", "RetrainWidget"]
