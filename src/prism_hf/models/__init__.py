"""Native transformers-5 ports of diffusion-LM backbones whose Hub checkpoints ship remote code that transformers 5
cannot run. Importing `prism_hf` imports them, which registers each ``model_type`` with the Auto classes, so the Hub
checkpoints load without ``trust_remote_code``:

* [`llada`](llada): ``GSAI-ML/LLaDA-8B-Instruct``, ``-Base``, ``GSAI-ML/LLaDA-1.5`` (``model_type="llada"``).
* [`dream`](dream): ``Dream-org/Dream-v0-Instruct-7B``, ``-Base-7B`` (``model_type="Dream"``).
* [`mdlm`](mdlm): ``kuleshov-group/mdlm-owt`` (MDLM's DiT, ``model_type="mdlm"``).

Each port is checked against the published model code on random weights (tests/test_*_port.py).
"""

from .dream import DreamConfig, DreamModel
from .llada import LLaDAConfig, LLaDAModelLM
from .mdlm import MDLMConfig, MDLMForMaskedLM

__all__ = ["DreamConfig", "DreamModel", "LLaDAConfig", "LLaDAModelLM", "MDLMConfig", "MDLMForMaskedLM"]
