"""prism_hf: PRISM self-correction for masked diffusion language models, as a Hugging Face plug-in."""

from transformers import AutoConfig, AutoModel

from .modeling.configuration_prism import PRISM_FORMAT_VERSION, PrismConfig
from .modeling.families import (
    FAMILY_REGISTRY,
    BackboneFamily,
    UnknownFamilyError,
    aligned_logits,
    get_family,
    mask_token_id_for,
    max_length_of,
    register_family,
    registered_families,
    replace_family,
)
from .modeling.heads import HEAD_REGISTRY, QualityHead, register_head
from .modeling.modeling_prism import PrismForMaskedDiffusion, PrismModelOutput
from .models import DreamConfig, DreamModel, LLaDAConfig, LLaDAModelLM, MDLMConfig, MDLMForMaskedLM

__version__ = "0.1.0"

# Heavier pieces (diffusers for sampling, the transformers Trainer for training) load on first use, so that
# `import prism_hf` (and loading a checkpoint with AutoModel) stays as light as the model itself.
_LAZY_EXPORTS = {
    "PrismScheduler": "sampling.scheduling_prism",
    "PrismSchedulerOutput": "sampling.scheduling_prism",
    "PrismPipeline": "sampling.pipeline_prism",
    "PrismPipelineOutput": "sampling.pipeline_prism",
    "register_unmasking_rule": "sampling.unmasking",
    "register_remasking_rule": "sampling.remasking",
    "register_remask_schedule": "sampling.remasking",
    "MDMTrainer": "training.trainer",
    "PrismTrainer": "training.trainer",
    "MaskedDiffusionTrainingArguments": "training.training_args",
    "PrismTrainingArguments": "training.training_args",
    "MaskedDiffusionCollator": "training.collator",
}


def __getattr__(name):
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'prism_hf' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY_EXPORTS))


AutoConfig.register(PrismConfig.model_type, PrismConfig, exist_ok=True)
AutoModel.register(PrismConfig, PrismForMaskedDiffusion, exist_ok=True)

__all__ = [
    "__version__",
    "PRISM_FORMAT_VERSION",
    "PrismConfig",
    "PrismForMaskedDiffusion",
    "PrismModelOutput",
    "BackboneFamily",
    "UnknownFamilyError",
    "register_family",
    "registered_families",
    "replace_family",
    "get_family",
    "FAMILY_REGISTRY",
    "mask_token_id_for",
    "aligned_logits",
    "max_length_of",
    "QualityHead",
    "register_head",
    "HEAD_REGISTRY",
    "LLaDAConfig",
    "LLaDAModelLM",
    "DreamConfig",
    "DreamModel",
    "MDLMConfig",
    "MDLMForMaskedLM",
    *_LAZY_EXPORTS,
]
