"""The AIRM network: one file per component (encoder, affinity, hypernet, implicit, airm)."""
from .airm import AIRM, Encoded
from .config import AIRMConfig
from .io import default_model_path, is_model_dir, load_model, save_model
from .registry import available_models, build_model, model_config

__all__ = ["AIRM", "AIRMConfig", "Encoded", "available_models", "build_model", "model_config",
           "load_model", "save_model", "default_model_path", "is_model_dir"]
