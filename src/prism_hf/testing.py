"""Tiny in-process models of every registered backbone family, for the tests, the examples' smoke runs and the docs.

Each builder returns a small, randomly initialised model of the *real* class of its family: transformers' own BERT and
ModernBERT, and prism_hf's native ports of LLaDA, Dream and MDLM (`prism_hf.models`), which load the Hub checkpoints
and are checked against the published model code in the test suite. Nothing here defines or registers a model class,
so importing this module changes nothing for a user (no stand-in shadows a real ``model_type``).

Builders: [`tiny_bert`], [`tiny_modernbert`], [`tiny_llada`], [`tiny_dream`], [`tiny_mdlm`].
"""

from __future__ import annotations

from typing import Optional

import torch
from transformers import BertConfig, BertForMaskedLM, ModernBertConfig, ModernBertForMaskedLM

__all__ = [
    "tiny_bert",
    "tiny_modernbert",
    "tiny_llada",
    "tiny_dream",
    "tiny_mdlm",
    "TINY_BUILDERS",
    "tiny_char_tokenizer",
]


# ----- builders ---------------------------------------------------------------------------------------
def tiny_bert(vocab_size: int = 64, hidden_size: int = 32, num_layers: int = 2, max_length: int = 128, seed: int = 0) -> BertForMaskedLM:
    """A 2-layer BERT masked LM; its config has no mask id, so pass ``mask_token_id`` or a tokenizer."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=4,
        intermediate_size=2 * hidden_size, max_position_embeddings=max_length, pad_token_id=0,
    )
    return BertForMaskedLM(config).eval()


def tiny_modernbert(vocab_size: int = 64, hidden_size: int = 32, num_layers: int = 2, max_length: int = 128, seed: int = 0) -> ModernBertForMaskedLM:
    torch.manual_seed(seed)
    config = ModernBertConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=4,
        intermediate_size=2 * hidden_size, max_position_embeddings=max_length, pad_token_id=0, mask_token_id=vocab_size - 1,
        bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2, global_attn_every_n_layers=1,
    )
    return ModernBertForMaskedLM(config).eval()


def tiny_llada(vocab_size: int = 64, d_model: int = 32, n_layers: int = 2, seed: int = 0, mask_token_id: Optional[int] = None,
               n_heads: int = 4, n_kv_heads: Optional[int] = None, **kwargs):
    """A tiny model of the native LLaDA port (`prism_hf.models.llada.LLaDAModelLM`): LLaDA-8B's architecture (llama
    blocks, RMS norms, rotary positions, SwiGLU-style gated MLP, untied output) at width ``d_model``.

    ``mask_token_id`` defaults to the last id (pass the tokenizer's when you use one); EOS and padding default to id 0.
    Other keyword arguments are `LLaDAConfig` fields (e.g. ``max_sequence_length``, ``n_kv_heads`` for grouped-query
    attention).
    """
    from prism_hf.models.llada import LLaDAConfig, LLaDAModelLM

    torch.manual_seed(seed)
    mask = vocab_size - 1 if mask_token_id is None else mask_token_id
    defaults = dict(
        n_kv_heads=n_heads if n_kv_heads is None else n_kv_heads, mlp_hidden_size=2 * d_model, max_sequence_length=256,
        rope_theta=10_000.0, eos_token_id=0, pad_token_id=0,
    )
    defaults.update(kwargs)
    config = LLaDAConfig(vocab_size=vocab_size, embedding_size=vocab_size, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                         mask_token_id=mask, **defaults)
    return LLaDAModelLM(config).eval()


def tiny_dream(vocab_size: int = 64, hidden_size: int = 32, num_layers: int = 2, seed: int = 0, mask_token_id: Optional[int] = None,
               num_heads: int = 4, num_kv_heads: int = 2, **kwargs):
    """A tiny model of the native Dream port (`prism_hf.models.dream.DreamModel`): Dream-v0's Qwen2-style architecture
    (grouped-query attention with q/k/v biases, RMS norms, rotary positions) at width ``hidden_size``. Its logits are
    shifted by one (the output at ``i`` predicts token ``i + 1``), as the real model's.

    ``mask_token_id`` defaults to the last id; padding, BOS and EOS default to id 0. Other keyword arguments are
    `DreamConfig` fields.
    """
    from prism_hf.models.dream import DreamConfig, DreamModel

    torch.manual_seed(seed)
    mask = vocab_size - 1 if mask_token_id is None else mask_token_id
    defaults = dict(
        intermediate_size=2 * hidden_size, max_position_embeddings=256, rope_theta=10_000.0, pad_token_id=0,
        bos_token_id=0, eos_token_id=0, initializer_range=0.05,
    )
    defaults.update(kwargs)
    config = DreamConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                         num_attention_heads=num_heads, num_key_value_heads=num_kv_heads, mask_token_id=mask, **defaults)
    return DreamModel(config).eval()


CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|eos|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def tiny_char_tokenizer():
    """A character-level `PreTrainedTokenizerFast` built offline (printable ASCII plus special tokens), with a mask
    token, an EOS token and a chat template, so that prompt/response and chat code paths run without the Hub.
    ``len(tokenizer)`` is 105; build the tiny backbone with ``vocab_size=len(tokenizer)`` and
    ``mask_token_id=tokenizer.mask_token_id``."""
    import string

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|pad|>", "<|unk|>", "<|bos|>", "<|eos|>", "<|mask|>", "<|user|>", "<|assistant|>", "<|system|>"]
    chars = [c for c in string.printable if c not in "\x0b\x0c"]
    vocab = {token: i for i, token in enumerate(specials + chars)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<|pad|>",
        unk_token="<|unk|>",
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        mask_token="<|mask|>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_mdlm(vocab_size: int = 65, hidden_dim: int = 32, n_blocks: int = 2, seed: int = 0, model_length: int = 128,
              **kwargs):
    """A small model of the native MDLM port (`prism_hf.models.mdlm.MDLMForMaskedLM`, the class that loads
    ``kuleshov-group/mdlm-owt``), as strict as upstream (``timesteps`` required, a bare tensor unless
    ``return_dict``). Upstream initialises the adaLN and output layers to zero (a fresh model outputs zero logits);
    they get small noise here so that a tiny untrained model has informative logits in tests."""
    from prism_hf.models.mdlm import MDLMConfig, MDLMForMaskedLM

    torch.manual_seed(seed)
    config = MDLMConfig(vocab_size=vocab_size, hidden_dim=hidden_dim, cond_dim=hidden_dim, n_blocks=n_blocks, n_heads=4,
                        model_length=model_length, dropout=0.0, **kwargs)
    model = MDLMForMaskedLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "adaLN_modulation" in name or "output_layer.linear" in name:
                param.normal_(std=0.1)
    return model.eval()


TINY_BUILDERS = {
    "bert": tiny_bert,
    "modernbert": tiny_modernbert,
    "llada": tiny_llada,
    "dream": tiny_dream,
    "mdlm": tiny_mdlm,
}
