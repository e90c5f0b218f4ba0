"""Training data: image/mask folders and coarse-mask synthesis."""
from .dataset import DataError, Pair, TrainCrops, ValCases, find_pairs, read_image, read_mask, read_pair
from .perturb import lowres_coarse, mask_iou, perturb_coarse, synthesize_coarse

__all__ = ["DataError", "Pair", "TrainCrops", "ValCases", "find_pairs", "read_image", "read_mask",
           "read_pair", "lowres_coarse", "mask_iou", "perturb_coarse", "synthesize_coarse"]
