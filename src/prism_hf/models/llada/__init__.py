"""Native port of LLaDA (``GSAI-ML/LLaDA-8B-Instruct``, ``-Base``, ``GSAI-ML/LLaDA-1.5``): no remote code.

Importing this module registers ``model_type="llada"`` with `AutoConfig`, `AutoModel`, `AutoModelForCausalLM` (the
Hub's ``auto_map`` names these two) and `AutoModelForMaskedLM`, so the Hub checkpoint (or any folder in its layout)
loads with ``AutoModel.from_pretrained(path)`` and ``trust_remote_code=False`` (the default).
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

from .configuration_llada import LLaDAConfig
from .modeling_llada import LLaDAModel, LLaDAModelLM, LLaDAPreTrainedModel

# exist_ok: the names live in transformers' registry of *extra* types, where a later registration of the same
# model_type replaces an earlier one (transformers itself has no "llada").
AutoConfig.register(LLaDAConfig.model_type, LLaDAConfig, exist_ok=True)
for _auto_class in (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM):
    _auto_class.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)

__all__ = ["LLaDAConfig", "LLaDAModel", "LLaDAModelLM", "LLaDAPreTrainedModel"]
