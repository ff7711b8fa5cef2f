"""The model core: the PRISM config and model, quality heads, backbone families (every fact about a backbone) and the
checkpoint layout (`prism_hf.modeling.checkpointing`)."""

from .configuration_prism import PRISM_FORMAT_VERSION, PrismConfig
from .families import (
    FAMILY_REGISTRY,
    BackboneFamily,
    MaskTokenNotFoundError,
    UnknownFamilyError,
    aligned_logits,
    enable_gradient_checkpointing,
    get_family,
    hidden_size_of,
    mask_token_id_for,
    max_length_of,
    register_family,
    registered_families,
    replace_family,
)
from .heads import HEAD_REGISTRY, QualityHead, register_head
from .modeling_prism import PrismForMaskedDiffusion, PrismModelOutput

__all__ = [
    "PRISM_FORMAT_VERSION",
    "PrismConfig",
    "PrismForMaskedDiffusion",
    "PrismModelOutput",
    "BackboneFamily",
    "FAMILY_REGISTRY",
    "MaskTokenNotFoundError",
    "UnknownFamilyError",
    "aligned_logits",
    "enable_gradient_checkpointing",
    "get_family",
    "hidden_size_of",
    "mask_token_id_for",
    "max_length_of",
    "register_family",
    "registered_families",
    "replace_family",
    "HEAD_REGISTRY",
    "QualityHead",
    "register_head",
]
