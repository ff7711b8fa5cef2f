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
from .utils.lazy import lazy_exports

__version__ = "0.1.0"

# Heavier pieces (diffusers for sampling, the transformers Trainer for training) load on first use, so that
# `import prism_hf` (and loading a checkpoint with AutoModel) stays as light as the model itself.
_LAZY_EXPORTS = {
    "PrismScheduler": "prism_hf.sampling.scheduling_prism",
    "PrismSchedulerOutput": "prism_hf.sampling.scheduling_prism",
    "PrismPipeline": "prism_hf.sampling.pipeline_prism",
    "PrismPipelineOutput": "prism_hf.sampling.pipeline_prism",
    "register_unmasking_rule": "prism_hf.sampling.unmasking",
    "register_remasking_rule": "prism_hf.sampling.remasking",
    "register_remask_schedule": "prism_hf.sampling.remasking",
    "MDMTrainer": "prism_hf.training.trainer",
    "PrismTrainer": "prism_hf.training.trainer",
    "MaskedDiffusionTrainingArguments": "prism_hf.training.training_args",
    "PrismTrainingArguments": "prism_hf.training.training_args",
    "MaskedDiffusionCollator": "prism_hf.training.collator",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY_EXPORTS, globals())

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
