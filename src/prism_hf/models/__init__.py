"""Native ports of diffusion-LM backbones whose Hub checkpoints ship remote code that transformers 5 cannot run.

* [`mdlm`](mdlm): ``kuleshov-group/mdlm-owt`` (MDLM's DiT), registered as ``model_type="mdlm"``.
"""

from .mdlm import MDLMConfig, MDLMForMaskedLM

__all__ = ["MDLMConfig", "MDLMForMaskedLM"]
