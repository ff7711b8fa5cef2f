"""A native transformers-5 port of Dream-v0 7B (``Dream-org/Dream-v0-Instruct-7B``, ``Dream-org/Dream-v0-Base-7B``).

The Hub checkpoints ship remote code (``configuration_dream.py``, ``modeling_dream.py``, ``generation_utils.py``;
HKUNLP/Dream, written for transformers 4.46) that does not run under transformers 5: ``ROPE_INIT_FUNCTIONS['default']``
is gone (``KeyError``), its generation config's ``validate()`` has the old signature, its RoPE ``inv_freq`` buffers are
left uninitialised when ``from_pretrained`` builds the model on the meta device (silently wrong logits), and its
``save_pretrained`` fails on a list-valued ``_tied_weights_keys``. This module re-implements the same network with
transformers-5 building blocks:

* the same module and parameter names and shapes (``model.embed_tokens``, ``model.layers.{i}.self_attn.{q,k,v,o}_proj``,
  ``model.layers.{i}.mlp.{gate,up,down}_proj``, ``model.layers.{i}.{input,post_attention}_layernorm``, ``model.norm``,
  ``lm_head``), so ``DreamModel.from_pretrained`` reads the Hub's sharded safetensors directly;
* the same math: Qwen2.5 decoder layers (RMS norms, rotate-half RoPE at the given ``position_ids``, grouped-query
  attention with biased q/k/v projections, SwiGLU MLP; transformers' own `Qwen2RMSNorm`, `Qwen2MLP`,
  `Qwen2RotaryEmbedding` and ``apply_rotary_pos_emb``, which compute exactly what the published copies of them do),
  with **bidirectional** attention (``is_causal=False``), a final norm and ``lm_head``. Dream is adapted from an
  autoregressive model: the logit at position ``i`` predicts token ``i + 1``. The model does not shift its output;
  prism_hf's family registry does (``logits_shift=True``);
* the published attention-mask conventions: ``None`` or ``"full"`` (no mask), or the pairwise ``(B, 1, L, L)``
  boolean mask that Dream's own ``diffusion_generate`` builds together with ``position_ids`` that skip left padding.

What differs, and why:

* Attention goes through transformers' attention interface (``config._attn_implementation``: ``"sdpa"`` by default,
  ``"eager"``, ``"flash_attention_2/3"`` when installed). Upstream always calls SDPA (and falls back to eager math for
  ``output_attentions``). Flash attention takes padding as a ``(B, L)`` mask only; a pairwise mask is refused there.
* A ``(B, L)`` padding mask is honoured (padding keys are excluded). Upstream passes such a mask straight to SDPA,
  which broadcasts it against the wrong dimensions; use it (with ``position_ids`` for left padding) or the pairwise
  mask. With no ``position_ids`` the positions are ``0 .. L-1``, as upstream.
* RoPE's ``inv_freq`` is a non-persistent buffer recomputed in ``_init_weights``, the transformers-5 way, so it is
  right after ``from_pretrained``; upstream's unused per-layer rotary modules are not rebuilt. ``rope_scaling`` types
  whose frequencies change with the input length (``"dynamic"``, ``"longrope"``) are refused by the config.
* Key/value caching for block decoding is prism_hf's own [`~prism_hf.models.cache.BlockKVCache`], passed as
  ``cache`` (fill over the whole sequence, then window forwards against the cached keys and values of the
  rest); upstream's autoregressive ``DynamicCache`` path and Fast-dLLM's ``dual_cache`` / ``replace_position`` are
  not ported. Nor are the ``labels`` loss, ``num_logits_to_keep`` and the ``DreamGenerationMixin``
  (``diffusion_generate``): prism_hf has its own sampler and losses. The forward refuses these arguments instead of
  ignoring them.
* ``from_pretrained`` refuses a checkpoint whose weights do not match the config (missing or unexpected keys), where
  transformers 5 would only warn and leave the missing weights randomly initialised.
* Tied weights are declared the transformers-5 way (``tie_word_embeddings=True`` ties ``lm_head`` to the embedding).

Reference: the Hub's remote code (HKUNLP/Dream) and its copy in NVlabs/Fast-dLLM (commit 24cc59e, ``dream/model``),
which additionally replaces any ``position_ids`` by ``0 .. L-1`` for its caches; this port follows the Hub's code and
honours them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, MaskedLMOutput
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.qwen2.modeling_qwen2 import (
    Qwen2MLP,
    Qwen2RMSNorm,
    Qwen2RotaryEmbedding,
    apply_rotary_pos_emb,
    eager_attention_forward,
)

from ..cache import BlockKVCache, pop_cache_argument
from .configuration_dream import DreamConfig

__all__ = [
    "DreamAttention",
    "DreamBaseModel",
    "DreamDecoderLayer",
    "DreamModel",
    "DreamPreTrainedModel",
    "DreamRMSNorm",
    "DreamRotaryEmbedding",
    "DreamOutput",
]

#: Arguments of the published ``DreamModel.forward`` that the port does not implement, with what to use instead. Any
#: value other than `None` / `False` / `0` is refused rather than ignored.
_UNPORTED_FORWARD_ARGUMENTS = {
    "labels": "compute the loss from the logits (prism_hf's losses do; note the logit at i predicts token i + 1)",
    "cache_position": "pass position_ids (with a BlockKVCache window they default to its positions)",
    "dual_cache": "Fast-dLLM's dual cache is a prism_hf.models.cache.BlockKVCache window here",
    "replace_position": "use BlockKVCache.set_window(positions) and pass the window's tokens with cache=cache",
    "num_logits_to_keep": "slice the returned logits",
    "logits_to_keep": "slice the returned logits",
}


def _is_unset(value: Any) -> bool:
    return value is None or value is False or (type(value) is int and value == 0)


def _describe(value: Any) -> str:
    """A short description of an argument's value for an error message."""
    if torch.is_tensor(value):
        return f"a tensor of shape {tuple(value.shape)}"
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    return f"a {type(value).__name__}"


class DreamRMSNorm(Qwen2RMSNorm):
    """RMS norm computed in float32 and cast back before the weight, ``weight * (x / rms(x)).to(x.dtype)`` (the same
    class as upstream's ``DreamRMSNorm``, a copy of Llama's)."""


class DreamRotaryEmbedding(Qwen2RotaryEmbedding):
    """Rotate-half RoPE tables ``(cos, sin)`` of shape `(batch, L, head_dim)` at explicit ``position_ids``, computed
    in float32 and cast to the input's dtype (upstream's ``DreamRotaryEmbedding``).

    ``inv_freq`` (and ``original_inv_freq``) are non-persistent buffers: checkpoints do not store them, so
    [`DreamPreTrainedModel._init_weights`] recomputes them whenever the model is materialised (``from_pretrained``
    builds it on the meta device first).
    """

    def compute_inv_freq(self, device: Optional[torch.device] = None) -> torch.Tensor:
        """The frequencies for ``config.rope_parameters`` (float32, shape `(head_dim // 2,)`)."""
        if self.rope_type == "default":
            inv_freq, _ = self.compute_default_rope_parameters(self.config)
        else:
            inv_freq, _ = ROPE_INIT_FUNCTIONS[self.rope_type](self.config, device)
        return inv_freq.to(device=device, dtype=torch.float32)


class DreamAttention(nn.Module):
    """Bidirectional multi-head attention with grouped key/value heads and RoPE (upstream's ``DreamSdpaAttention``).

    The projections are plain `nn.Linear` layers (``q_proj``, ``k_proj``, ``v_proj`` with bias, ``o_proj`` without),
    the targets of LoRA. The attention itself is the function ``config._attn_implementation`` names in transformers'
    ``ALL_ATTENTION_FUNCTIONS`` (``eager_attention_forward`` for ``"eager"``), always non-causal.
    """

    def __init__(self, config: DreamConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = False  # read by transformers' sdpa / flash attention functions
        self.q_proj = nn.Linear(config.hidden_size, config.num_attention_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(config.num_attention_heads * self.head_dim, config.hidden_size, bias=False)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: Tuple[torch.Tensor, torch.Tensor],
        attention_mask: Optional[torch.Tensor] = None,
        cache: Optional[BlockKVCache] = None,
        **kwargs,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """
        Args:
            cache ([`~prism_hf.models.cache.BlockKVCache`], *optional*): Stores this layer's rotated keys
                and values (fill) or supplies those of the rest of the sequence (window forward).
            hidden_states (`torch.Tensor` of shape `(B, L, hidden_size)`): Normed input of the layer.
            position_embeddings (`tuple` of two `torch.Tensor` of shape `(B or 1, L, head_dim)`): RoPE ``(cos, sin)``
                at each query/key position.
            attention_mask (`torch.Tensor`, *optional*): Already in the format of the attention implementation
                (see [`DreamBaseModel.forward`]); `None` attends everywhere.
            kwargs: Passed to the attention function (e.g. flash attention's sequence-length arguments).

        Returns:
            The attention output of shape `(B, L, hidden_size)` and the attention probabilities of shape
            `(B, num_attention_heads, L, L)` (eager only; `None` otherwise).
        """
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        if cache is not None:  # keys are rotated at their own positions, so cached and fresh ones mix
            key_states, value_states = cache.update(key_states, value_states, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output), attn_weights


class DreamDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm residual layer: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, config: DreamConfig, layer_idx: int):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.self_attn = DreamAttention(config, layer_idx)
        self.mlp = Qwen2MLP(config)
        self.input_layernorm = DreamRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = DreamRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: Tuple[torch.Tensor, torch.Tensor],
        attention_mask: Optional[torch.Tensor] = None,
        **kwargs,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """
        Args:
            hidden_states (`torch.Tensor` of shape `(B, L, hidden_size)`): The residual stream (positional, so that
                reentrant gradient checkpointing sees it).
            position_embeddings, attention_mask, kwargs: See [`DreamAttention.forward`].

        Returns:
            The new residual stream `(B, L, hidden_size)` and the attention probabilities (eager only, else `None`).
        """
        residual = hidden_states
        attn_output, attn_weights = self.self_attn(
            self.input_layernorm(hidden_states),
            position_embeddings=position_embeddings,
            attention_mask=attention_mask,
            **kwargs,
        )
        hidden_states = residual + attn_output
        hidden_states = hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states, attn_weights


@dataclass
class DreamOutput(MaskedLMOutput):
    """[`DreamModel`]'s output: a `MaskedLMOutput` (``logits``, ``hidden_states``, ``attentions``) plus the
    block-decoding ``cache`` when one was used.

    Args:
        cache ([`~prism_hf.models.cache.BlockKVCache`], *optional*): The cache passed in or created by
            ``use_cache=True``.
    """

    cache: Optional[BlockKVCache] = None


class DreamPreTrainedModel(PreTrainedModel):
    """Shared settings of the Dream classes: config class, initialisation, attention support, strict loading."""

    config_class = DreamConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DreamDecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    #: The forward takes a [`~prism_hf.models.cache.BlockKVCache`] as ``cache`` (block decoding).
    supports_block_kv_cache = True
    #: Checkpoint keys that a class legitimately leaves unused when loading (see `from_pretrained`).
    _checkpoint_keys_not_loaded: Tuple[str, ...] = ()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Upstream's initialisation: normal(0, ``initializer_range``) linear and embedding weights, zero biases, a
        zero embedding row for ``pad_token_id``, unit norm weights; and the RoPE frequencies, which no checkpoint
        stores (the transformers-5 way to have them right after ``from_pretrained``)."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            # A loaded weight carries the initialised flag, which the slice below would lose: check it here.
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, DreamRMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, DreamRotaryEmbedding):
            inv_freq = module.compute_inv_freq(device=module.inv_freq.device)
            init.copy_(module.inv_freq, inv_freq)
            init.copy_(module.original_inv_freq, inv_freq)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        r"""[`~transformers.PreTrainedModel.from_pretrained`], refusing a checkpoint whose weights do not match the
        model: missing keys (which transformers 5 would leave randomly initialised with a warning) and unexpected keys
        raise a `ValueError` that lists them ([`DreamBaseModel`] skips the checkpoint's ``lm_head.weight``, which
        it has no place for). Mismatched shapes raise as in transformers unless you pass
        ``ignore_mismatched_sizes=True``. Every other argument (``dtype``, ``device_map``, ``attn_implementation``,
        ``output_loading_info``, ...) is passed through.
        """
        output_loading_info = kwargs.pop("output_loading_info", False)
        model, loading_info = super().from_pretrained(
            pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
        )
        problems = _loading_problems(
            loading_info,
            allow_mismatched=bool(kwargs.get("ignore_mismatched_sizes")),
            expected_unused=cls._checkpoint_keys_not_loaded,
        )
        if problems:
            details = "; ".join(f"{name}: {keys}" for name, keys in problems.items())
            raise ValueError(
                f"The checkpoint at {str(pretrained_model_name_or_path)!r} does not match {cls.__name__} built from its "
                f"config ({details}). Refusing to leave weights randomly initialised: check that the folder holds a "
                "complete Dream checkpoint whose config.json matches its weights."
            )
        return (model, loading_info) if output_loading_info else model


class DreamBaseModel(DreamPreTrainedModel):
    """Dream's transformer without the output projection: token embedding, ``num_hidden_layers`` bidirectional
    [`DreamDecoderLayer`]s and the final norm (``norm``), whose output is the last hidden state that ``lm_head`` and
    PRISM's quality head read."""

    # Loaded from a full Dream checkpoint, the base model has no place for the output projection.
    _checkpoint_keys_not_loaded = ("lm_head.weight",)

    def __init__(self, config: DreamConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([DreamDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = DreamRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = DreamRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def _attention_mask_for_implementation(
        self, attention_mask: Union[None, str, torch.Tensor], inputs_embeds: torch.Tensor
    ) -> Optional[torch.Tensor]:
        """Turn Dream's mask conventions into what the attention function of ``config._attn_implementation`` takes."""
        batch_size, seq_len = inputs_embeds.shape[:2]
        implementation = self.config._attn_implementation
        if attention_mask is None:
            return None
        if isinstance(attention_mask, str):
            if attention_mask != "full":
                raise ValueError(f"attention_mask={attention_mask!r}: the only string Dream accepts is 'full' (no mask).")
            return None
        if not torch.is_tensor(attention_mask):
            raise ValueError(f"attention_mask must be None, 'full' or a tensor; got {type(attention_mask).__name__}.")
        shape = tuple(attention_mask.shape)
        if attention_mask.dim() == 2:
            if shape != (batch_size, seq_len):
                raise ValueError(
                    f"attention_mask has shape {shape}; a padding mask must have shape (batch_size, sequence_length) = "
                    f"{(batch_size, seq_len)} (1 = token, 0 = padding)."
                )
            return create_bidirectional_mask(config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask)
        heads = self.config.num_attention_heads
        if (
            attention_mask.dim() != 4
            or shape[0] not in (1, batch_size)
            or shape[1] not in (1, heads)
            or shape[2:] != (seq_len, seq_len)
        ):
            raise ValueError(
                f"attention_mask has shape {shape}; expected a (batch_size, sequence_length) padding mask or a pairwise "
                f"(batch_size, 1, sequence_length, sequence_length) mask, here {(batch_size, 1, seq_len, seq_len)} (a "
                f"batch or head dimension of 1 broadcasts; per-head masks have {heads} heads)."
            )
        if "flash" in (implementation or ""):
            raise ValueError(
                f"attention_mask of shape {shape} with attn_implementation={implementation!r}: flash attention takes "
                "padding as a (batch_size, sequence_length) mask only; pass that (with position_ids for left padding) "
                "or load the model with attn_implementation='sdpa'."
            )
        if attention_mask.dtype == torch.bool:
            if implementation == "sdpa":
                return attention_mask  # SDPA reads True = attend, as upstream passes it
            # The other functions add the mask to the scores.
            zero = torch.zeros((), dtype=inputs_embeds.dtype, device=attention_mask.device)
            return torch.where(attention_mask, zero, torch.finfo(inputs_embeds.dtype).min)
        if attention_mask.is_floating_point():
            return attention_mask.to(inputs_embeds.dtype)  # additive, for every implementation
        raise ValueError(
            f"attention_mask of shape {shape} has dtype {attention_mask.dtype}; a pairwise mask must be boolean "
            "(True = attend) or floating point (added to the attention scores)."
        )

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Union[None, str, torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        inputs_embeds: Optional[torch.FloatTensor] = None,
        output_hidden_states: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        cache: Optional[BlockKVCache] = None,
        **kwargs,
    ) -> Union[BaseModelOutput, Tuple[torch.Tensor, ...]]:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): Token ids, mask tokens included.
                Give either this or ``inputs_embeds``.
            attention_mask (`torch.Tensor` or `str`, *optional*): `None` or ``"full"``: every position attends to
                every other. A `(batch_size, sequence_length)` padding mask (1 = token, 0 = padding): padding keys are
                excluded. A pairwise `(batch_size, 1, sequence_length, sequence_length)` mask, boolean (True = attend,
                as Dream's ``diffusion_generate`` builds it) or floating point (added to the scores).
            position_ids (`torch.LongTensor` of shape `(batch_size or 1, sequence_length)`, *optional*): RoPE position
                of every token; defaults to ``0 .. sequence_length - 1``. With left padding pass positions that
                skip it, e.g. ``(attention_mask.cumsum(-1) - 1).clamp(min=0)``, as Dream's sampler does.
            inputs_embeds (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`, *optional*):
                Embedded inputs instead of ``input_ids``.
            output_hidden_states (`bool`, *optional*): Also return the input of every layer followed by the final
                normed hidden state (``num_hidden_layers + 1`` tensors), as upstream.
            output_attentions (`bool`, *optional*): Also return every layer's attention probabilities; needs
                ``attn_implementation="eager"``.
            return_dict (`bool`, *optional*): Return a `BaseModelOutput` (default: ``config.return_dict``) or a tuple.
            cache ([`~prism_hf.models.cache.BlockKVCache`], *optional*): A block-decoding cache. Without a
                window set, this forward covers the whole sequence and fills it. With a window
                (``cache.set_window(positions)``), the input is the tokens at those positions, ``position_ids`` default
                to them, ``attention_mask`` is the `(batch_size, cached_length)` padding mask of the whole sequence (or
                `None`), and the other positions' keys and values come from the cache.
            kwargs: Passed to the attention function.

        Returns:
            [`~transformers.modeling_outputs.BaseModelOutput`] with ``last_hidden_state`` of shape
            `(batch_size, sequence_length, hidden_size)` (the output of ``norm``), or the tuple of its set fields.
        """
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Give exactly one of input_ids and inputs_embeds.")
        if output_attentions and self.config._attn_implementation != "eager":
            raise ValueError(
                f"output_attentions=True needs attn_implementation='eager'; this model uses "
                f"{self.config._attn_implementation!r} (load it with attn_implementation='eager')."
            )
        if input_ids is not None:
            if input_ids.dim() != 2 or input_ids.dtype.is_floating_point:
                raise ValueError(
                    f"input_ids must be an integer tensor of shape (batch_size, sequence_length); got shape "
                    f"{tuple(input_ids.shape)} and dtype {input_ids.dtype}."
                )
            inputs_embeds = self.embed_tokens(input_ids)
        elif inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
            raise ValueError(
                f"inputs_embeds has shape {tuple(inputs_embeds.shape)}; expected (batch_size, sequence_length, "
                f"{self.config.hidden_size})."
            )
        batch_size, seq_len = inputs_embeds.shape[:2]
        cache = pop_cache_argument(cache, kwargs)
        window = None if cache is None else cache.window
        if window is not None and tuple(window.shape) != (batch_size, seq_len):
            raise ValueError(
                f"The cache's window holds positions of shape {tuple(window.shape)}; a window forward takes the tokens at "
                f"those positions, but got input of shape {(batch_size, seq_len)}."
            )
        if position_ids is None:
            position_ids = window if window is not None else torch.arange(seq_len, device=inputs_embeds.device)[None]
        elif position_ids.dim() != 2 or position_ids.shape[0] not in (1, batch_size) or position_ids.shape[1] != seq_len:
            raise ValueError(
                f"position_ids has shape {tuple(position_ids.shape)}; expected ({batch_size} or 1, {seq_len})."
            )
        if window is not None:
            if isinstance(attention_mask, str) or (torch.is_tensor(attention_mask) and attention_mask.dim() != 2):
                raise ValueError("A window forward takes the (batch_size, cached_length) padding mask (or None).")
            mask = cache.window_attention_mask(attention_mask, self.config._attn_implementation, inputs_embeds.dtype)
        else:
            mask = self._attention_mask_for_implementation(attention_mask, inputs_embeds)

        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, attn_weights = layer(
                hidden_states, position_embeddings=position_embeddings, attention_mask=mask,
                cache=cache, **kwargs
            )
            if output_attentions:
                all_attentions += (attn_weights,)
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)

        if not return_dict:
            return tuple(v for v in (hidden_states, all_hidden_states, all_attentions) if v is not None)
        return BaseModelOutput(last_hidden_state=hidden_states, hidden_states=all_hidden_states, attentions=all_attentions)


class DreamModel(DreamPreTrainedModel):
    r"""Dream-v0 with its output projection: the class the Hub's ``auto_map`` names for ``AutoModel``, loadable from
    ``Dream-org/Dream-v0-Instruct-7B`` / ``Dream-org/Dream-v0-Base-7B`` without remote code.

    ``model`` is the [`DreamBaseModel`] (``model.norm`` gives the final hidden state) and ``lm_head`` the projection to
    the vocabulary. Dream is adapted from an autoregressive model: **the logit at position ``i`` predicts token
    ``i + 1``**; the model returns the logits unshifted (prism_hf's family registry shifts them). Upstream's
    generation mixin (``diffusion_generate``) and key/value caches are not ported: sample with prism_hf's
    `PrismPipeline` / `PrismScheduler`.

    Example:
        ```python
        import torch
        import prism_hf.models.dream  # registers model_type "Dream" with AutoConfig / AutoModel
        from transformers import AutoModel

        model = AutoModel.from_pretrained("Dream-org/Dream-v0-Instruct-7B", dtype=torch.bfloat16)  # no remote code
        ids = torch.full((1, 64), model.config.mask_token_id)
        logits = model(ids).logits  # (1, 64, 152064); logits[:, i] predicts token i + 1
        ```
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: DreamConfig):
        super().__init__(config)
        self.model = DreamBaseModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Union[None, str, torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        inputs_embeds: Optional[torch.FloatTensor] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        cache: Optional[BlockKVCache] = None,
        use_cache: Optional[bool] = None,
        **kwargs,
    ) -> Union[DreamOutput, Tuple[torch.Tensor, ...]]:
        r"""
        Args:
            input_ids, attention_mask, position_ids, inputs_embeds, output_hidden_states: See
                [`DreamBaseModel.forward`].
            return_dict (`bool`, *optional*): Return a [`DreamOutput`] (a `MaskedLMOutput` with ``cache``;
                default: ``config.return_dict``, as upstream) or the tuple ``(logits, hidden_states?, attentions?)``.
            cache ([`~prism_hf.models.cache.BlockKVCache`], *optional*): See [`DreamBaseModel.forward`].
            use_cache (`bool`, *optional*): With no ``cache``, create a cache, fill it and return it.
            kwargs: ``output_attentions`` (eager only) and arguments of the attention function. The published
                forward's ``labels``, ``cache_position``, ``num_logits_to_keep``, ``dual_cache`` and
                ``replace_position`` are not ported and are refused when set.

        Returns:
            Logits of shape `(batch_size, sequence_length, vocab_size)` (the logit at ``i`` predicts token ``i + 1``),
            with ``hidden_states`` / ``attentions`` when asked for; ``loss`` is always `None`.
        """
        cache = pop_cache_argument(cache, kwargs)
        for name, instead in _UNPORTED_FORWARD_ARGUMENTS.items():
            if name in kwargs:
                value = kwargs.pop(name)
                if not _is_unset(value):
                    raise ValueError(f"{name}={_describe(value)} is not supported by the native Dream port: {instead}.")
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if cache is None and use_cache:
            cache = BlockKVCache()
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            cache=cache,
            **kwargs,
        )
        logits = self.lm_head(outputs.last_hidden_state)
        if not return_dict:
            return tuple(v for v in (logits, outputs.hidden_states, outputs.attentions) if v is not None)
        return DreamOutput(
            logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions, cache=cache
        )


def _loading_problems(
    loading_info: Dict[str, Any], allow_mismatched: bool, expected_unused: Tuple[str, ...] = ()
) -> Dict[str, list]:
    """The non-empty entries of ``from_pretrained``'s loading info that mean the weights do not match the model
    (``expected_unused``: unexpected keys that are not a problem)."""
    names = ["missing_keys", "unexpected_keys", "error_msgs"] + ([] if allow_mismatched else ["mismatched_keys"])
    problems = {}
    for name in names:
        entries = sorted(str(entry) for entry in loading_info.get(name) or ())
        if name == "unexpected_keys":
            entries = [key for key in entries if key not in expected_unused]
        if entries:
            problems[name] = entries
    return problems
