"""Native transformers-5 port of Dream-v0 7B (``Dream-org/Dream-v0-Instruct-7B``, ``Dream-org/Dream-v0-Base-7B``).

Importing this module registers ``model_type="Dream"`` with `AutoConfig` and `AutoModel` (the Auto class the Hub's
``auto_map`` names), so the Hub checkpoint (or any folder in its layout) loads with ``AutoModel.from_pretrained(path)``
and ``trust_remote_code=False`` (the default): transformers prefers a registered class to a config's ``auto_map``
unless remote code is trusted explicitly.
"""

from transformers import AutoConfig, AutoModel

from .configuration_dream import SUPPORTED_HIDDEN_ACTS, SUPPORTED_ROPE_TYPES, DreamConfig
from .modeling_dream import DreamBaseModel, DreamModel, DreamPreTrainedModel

# exist_ok: the names live in transformers' registry of *extra* types, where a later registration of the same
# model_type replaces an earlier one (transformers itself has no "Dream").
AutoConfig.register(DreamConfig.model_type, DreamConfig, exist_ok=True)
AutoModel.register(DreamConfig, DreamModel, exist_ok=True)

__all__ = [
    "DreamBaseModel",
    "DreamConfig",
    "DreamModel",
    "DreamPreTrainedModel",
    "SUPPORTED_HIDDEN_ACTS",
    "SUPPORTED_ROPE_TYPES",
]
