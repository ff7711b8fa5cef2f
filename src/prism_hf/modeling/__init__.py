"""The model core: the PRISM config and model, quality heads, backbone families (every fact about a backbone)."""

from .configuration_prism import PRISM_FORMAT_VERSION, PrismConfig
from .families import BackboneFamily, UnknownFamilyError, get_family, register_family, registered_families, replace_family
from .heads import HEAD_REGISTRY, QualityHead, register_head
from .modeling_prism import PrismForMaskedDiffusion, PrismModelOutput

__all__ = [
    "PRISM_FORMAT_VERSION",
    "PrismConfig",
    "PrismForMaskedDiffusion",
    "PrismModelOutput",
    "BackboneFamily",
    "UnknownFamilyError",
    "get_family",
    "register_family",
    "registered_families",
    "replace_family",
    "HEAD_REGISTRY",
    "QualityHead",
    "register_head",
]
