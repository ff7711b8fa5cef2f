"""Training: the MDM and PRISM losses, the collator, the training arguments and the Trainer subclasses.

The trainers (which import the transformers Trainer and datasets) load on first use, so that the losses, the
collator and the arguments stay light to import.
"""

from ..utils.lazy import lazy_exports

_LAZY_EXPORTS = {
    "MaskedDiffusionCollator": "prism_hf.training.collator",
    "PrismLossOutput": "prism_hf.training.losses",
    "forward_mask": "prism_hf.training.losses",
    "mdm_loss": "prism_hf.training.losses",
    "prism_step": "prism_hf.training.losses",
    "sample_proposals": "prism_hf.training.losses",
    "select_update_positions": "prism_hf.training.losses",
    "self_correction_loss": "prism_hf.training.losses",
    "MDMTrainer": "prism_hf.training.trainer",
    "PrismTrainer": "prism_hf.training.trainer",
    "MaskedDiffusionTrainingArguments": "prism_hf.training.training_args",
    "PrismTrainingArguments": "prism_hf.training.training_args",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY_EXPORTS, globals())

__all__ = list(_LAZY_EXPORTS)
