"""Training data: image/mask folders and coarse-mask synthesis."""
from .dataset import (DataError, DataSource, Pair, TrainCrops, ValCases, check_pairs, find_pairs,
                      is_heldout, read_image, read_mask, read_pair)
from .perturb import (boundary_noise, down_up, lowres_coarse, mask_iou, near_identity_coarse,
                      perturb_coarse, synthesize_coarse)

__all__ = ["DataError", "DataSource", "Pair", "TrainCrops", "ValCases", "check_pairs", "find_pairs",
           "is_heldout", "read_image", "read_mask", "read_pair", "boundary_noise", "down_up",
           "lowres_coarse", "mask_iou", "near_identity_coarse", "perturb_coarse",
           "synthesize_coarse"]
