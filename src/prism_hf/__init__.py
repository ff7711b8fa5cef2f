"""prism_hf: PRISM self-correction for masked diffusion language models, as a Hugging Face plug-in."""

from transformers import AutoConfig, AutoModel

from .configuration_prism import PRISM_FORMAT_VERSION, PrismConfig
from .families import (
    BackboneFamily,
    UnknownFamilyError,
    get_family,
    register_family,
    registered_families,
    replace_family,
)
from .heads import HEAD_REGISTRY, QualityHead, register_head
from .modeling_prism import PrismForMaskedDiffusion, PrismModelOutput
from .models.mdlm import MDLMConfig, MDLMForMaskedLM

__version__ = "0.1.0"

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
    "QualityHead",
    "register_head",
    "HEAD_REGISTRY",
    "MDLMConfig",
    "MDLMForMaskedLM",
]
