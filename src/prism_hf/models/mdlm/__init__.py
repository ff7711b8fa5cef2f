"""Native port of MDLM (``kuleshov-group/mdlm-owt``): no remote code, no flash-attn.

Importing this module registers ``model_type="mdlm"`` with `AutoConfig` and `AutoModelForMaskedLM`, so the Hub
checkpoint (or any folder in its layout) loads with ``AutoModelForMaskedLM.from_pretrained(path)`` and
``trust_remote_code=False`` (the default).
"""

from transformers import AutoConfig, AutoModelForMaskedLM

from .configuration_mdlm import MDLMConfig
from .modeling_mdlm import MDLMForMaskedLM, MDLMPreTrainedModel

# exist_ok: the names live in transformers' registry of *extra* types, where a later registration of the same
# model_type replaces an earlier one (transformers itself has no "mdlm").
AutoConfig.register(MDLMConfig.model_type, MDLMConfig, exist_ok=True)
AutoModelForMaskedLM.register(MDLMConfig, MDLMForMaskedLM, exist_ok=True)

__all__ = ["MDLMConfig", "MDLMForMaskedLM", "MDLMPreTrainedModel"]
