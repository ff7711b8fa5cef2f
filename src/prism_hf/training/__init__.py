"""Training: the MDM and PRISM losses, the collator, the training arguments and the Trainer subclasses.

The trainers (which import the transformers Trainer and datasets) load on first use, so that the losses, the
collator and the arguments stay light to import.
"""

import importlib

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


def __getattr__(name):
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'prism_hf.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY_EXPORTS))


__all__ = list(_LAZY_EXPORTS)
