"""Training: configuration, the per-batch forward pass, checkpoints and the loop."""
from .config import TrainConfig
from .trainer import TrainingCancelled, TrainResult, train, validate

__all__ = ["TrainConfig", "TrainResult", "TrainingCancelled", "train", "validate"]
