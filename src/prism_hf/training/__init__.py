"""Training: the MDM and PRISM losses, the collator, the training arguments and the Trainer subclasses."""

from .collator import MaskedDiffusionCollator
from .losses import (
    PrismLossOutput,
    forward_mask,
    mdm_loss,
    prism_step,
    sample_proposals,
    select_update_positions,
    self_correction_loss,
)
from .trainer import MDMTrainer, PrismTrainer
from .training_args import MaskedDiffusionTrainingArguments, PrismTrainingArguments

__all__ = [
    "MaskedDiffusionCollator",
    "PrismLossOutput",
    "forward_mask",
    "mdm_loss",
    "prism_step",
    "sample_proposals",
    "select_update_positions",
    "self_correction_loss",
    "MDMTrainer",
    "PrismTrainer",
    "MaskedDiffusionTrainingArguments",
    "PrismTrainingArguments",
]
