"""Tiny in-process stand-ins for the Hub backbones, used by the tests, the examples' smoke runs and the docs.

The remote-code families (LLaDA, Dream) cannot be downloaded offline, so this module defines small
models of our own with the same *interface*: the same ``model_type``, the same module paths to the final
norm, the same mask-id convention and forward signature. They are registered with the transformers Auto
classes on import, so ``AutoModel.from_pretrained(folder)`` works for a saved tiny model just as it does
for the real one with ``trust_remote_code=True``. MDLM has a native port (`prism_hf.models.mdlm`); [`tiny_mdlm`] builds
a small model of that class.

Builders: [`tiny_bert`], [`tiny_modernbert`], [`tiny_llada`], [`tiny_dream`], [`tiny_mdlm`].
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    BertConfig,
    BertForMaskedLM,
    ModernBertConfig,
    ModernBertForMaskedLM,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutputWithPast, MaskedLMOutput

__all__ = [
    "TinyLLaDAConfig",
    "TinyLLaDAModelLM",
    "TinyDreamConfig",
    "TinyDreamModel",
    "tiny_bert",
    "tiny_modernbert",
    "tiny_llada",
    "tiny_dream",
    "tiny_mdlm",
    "TINY_BUILDERS",
    "tiny_char_tokenizer",
]


class _Block(nn.Module):
    """Pre-norm bidirectional attention block with q/k/v projections named as in LLaDA / Llama."""

    def __init__(self, d: int, n_heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.n_heads = n_heads
        self.attn_norm = nn.LayerNorm(d)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_norm = nn.LayerNorm(d)
        self.ff_proj = nn.Linear(d, mlp_ratio * d, bias=False)
        self.ff_out = nn.Linear(mlp_ratio * d, d, bias=False)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, l, d = x.shape
        h = self.attn_norm(x)
        q, k, v = (proj(h).view(b, l, self.n_heads, d // self.n_heads).transpose(1, 2) for proj in (self.q_proj, self.k_proj, self.v_proj))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=False)
        x = x + self.attn_out(a.transpose(1, 2).reshape(b, l, d))
        return x + self.ff_out(F.gelu(self.ff_proj(self.ff_norm(x))))


def _padding_to_sdpa_mask(attention_mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    if attention_mask is None:
        return None
    if attention_mask.dim() == 4:
        return attention_mask.bool()
    return attention_mask.bool()[:, None, None, :]


class _TinyPreTrained(PreTrainedModel):
    supports_gradient_checkpointing = False

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


# ----- LLaDA ------------------------------------------------------------------------------------------
class TinyLLaDAConfig(PretrainedConfig):
    """Mimics LLaDA's config: ``d_model``, ``n_layers``, ``n_heads``, ``vocab_size`` and ``mask_token_id``."""

    model_type = "llada"

    def __init__(self, vocab_size=64, d_model=32, n_layers=2, n_heads=4, max_sequence_length=256, mask_token_id=63, **kwargs):
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.n_layers = n_layers
        self.n_heads = n_heads
        self.max_sequence_length = max_sequence_length
        self.mask_token_id = mask_token_id
        super().__init__(**kwargs)


class _TinyLLaDAModel(nn.Module):
    """LLaDA's ``LLaDAModel``: ``transformer.{wte, blocks, ln_f, ff_out}``; returns logits, not hidden states."""

    def __init__(self, config: TinyLLaDAConfig):
        super().__init__()
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.d_model),
                wpe=nn.Embedding(config.max_sequence_length, config.d_model),
                blocks=nn.ModuleList([_Block(config.d_model, config.n_heads) for _ in range(config.n_layers)]),
                ln_f=nn.LayerNorm(config.d_model),
                ff_out=nn.Linear(config.d_model, config.vocab_size, bias=False),
            )
        )

    def forward(self, input_ids, attention_mask=None):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.transformer.wte(input_ids) + self.transformer.wpe(positions)
        mask = _padding_to_sdpa_mask(attention_mask)
        for block in self.transformer.blocks:
            x = block(x, mask)
        return self.transformer.ff_out(self.transformer.ln_f(x))


class TinyLLaDAModelLM(_TinyPreTrained):
    """A few-layer model with LLaDA-8B's interface (``model.transformer.ln_f``, q/k/v_proj, ``mask_token_id``)."""

    config_class = TinyLLaDAConfig
    base_model_prefix = "model"

    def __init__(self, config: TinyLLaDAConfig):
        super().__init__(config)
        self.model = _TinyLLaDAModel(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.transformer.wte

    def forward(self, input_ids, attention_mask=None, return_dict=True, **kwargs):
        logits = self.model(input_ids, attention_mask)
        return CausalLMOutputWithPast(logits=logits)


# ----- Dream ------------------------------------------------------------------------------------------
class TinyDreamConfig(PretrainedConfig):
    """Mimics Dream's config (``model_type='Dream'``, ``hidden_size``, ``mask_token_id``)."""

    model_type = "Dream"

    def __init__(self, vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=256,
                 mask_token_id=63, pad_token_id=0, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.mask_token_id = mask_token_id
        super().__init__(pad_token_id=pad_token_id, **kwargs)


class _TinyDreamBase(nn.Module):
    def __init__(self, config: TinyDreamConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.layers = nn.ModuleList([_Block(config.hidden_size, config.num_attention_heads) for _ in range(config.num_hidden_layers)])
        self.norm = nn.LayerNorm(config.hidden_size)

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        x = self.embed_tokens(input_ids) + self.embed_positions(position_ids)
        mask = None if attention_mask is None or isinstance(attention_mask, str) else _padding_to_sdpa_mask(attention_mask)
        for layer in self.layers:
            x = layer(x, mask)
        return BaseModelOutput(last_hidden_state=self.norm(x))


class TinyDreamModel(_TinyPreTrained):
    """Dream's interface: ``model.norm``, ``lm_head``, a 4D/"full" attention mask and position ids; the
    output at position ``i`` predicts token ``i+1`` (an AR-adapted model)."""

    config_class = TinyDreamConfig
    base_model_prefix = "model"

    def __init__(self, config: TinyDreamConfig):
        super().__init__(config)
        self.model = _TinyDreamBase(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def forward(self, input_ids, attention_mask=None, position_ids=None, return_dict=True, **kwargs):
        hidden = self.model(input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state
        return MaskedLMOutput(logits=self.lm_head(hidden))


for _config_cls, _model_cls, _autos in (
    (TinyLLaDAConfig, TinyLLaDAModelLM, (AutoModel,)),
    (TinyDreamConfig, TinyDreamModel, (AutoModel,)),
):
    AutoConfig.register(_config_cls.model_type, _config_cls, exist_ok=True)
    for _auto in _autos:
        _auto.register(_config_cls, _model_cls, exist_ok=True)


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
               **kwargs) -> TinyLLaDAModelLM:
    """A tiny LLaDA-shaped model; ``mask_token_id`` defaults to the last id (pass the tokenizer's when you use one)."""
    torch.manual_seed(seed)
    mask = vocab_size - 1 if mask_token_id is None else mask_token_id
    config = TinyLLaDAConfig(vocab_size=vocab_size, d_model=d_model, n_layers=n_layers, mask_token_id=mask, **kwargs)
    return TinyLLaDAModelLM(config).eval()


def tiny_dream(vocab_size: int = 64, hidden_size: int = 32, num_layers: int = 2, seed: int = 0, mask_token_id: Optional[int] = None,
               **kwargs) -> TinyDreamModel:
    torch.manual_seed(seed)
    mask = vocab_size - 1 if mask_token_id is None else mask_token_id
    config = TinyDreamConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers, mask_token_id=mask, **kwargs)
    return TinyDreamModel(config).eval()


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
    from prism_hf.models.mdlm import MDLMConfig, MDLMForMaskedLM  # absolute: this file is also copied as remote code

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
