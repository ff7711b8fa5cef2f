"""A native transformers-5 port of LLaDA (``GSAI-ML/LLaDA-8B-Instruct``, ``GSAI-ML/LLaDA-8B-Base``, ``GSAI-ML/LLaDA-1.5``).

The Hub checkpoints ship remote code (``modeling_llada.py``, an OLMo derivative) that does not load under
transformers 5: its ``LLaDAModelLM`` never calls ``post_init()``, overrides ``tie_weights()`` with the old signature and
reads a ``config.use_cache`` that transformers 5 no longer keeps; it also ignores ``attention_mask`` and cannot use
``gradient_checkpointing_enable()``. This module re-implements the same network the way transformers adopts a Hub
model, written from a reading of the published code (the copy in NVlabs/Fast-dLLM, commit 24cc59e, which has the
Hub's classes, parameter names and forward math) and checked against it on random weights in
``tests/test_llada_port.py``:

* the same module tree, parameter names and shapes, so the Hub's sharded safetensors load directly:
  ``model.transformer.wte``, ``model.transformer.blocks.{i}.{attn_norm, q_proj, k_proj, v_proj, attn_out, ff_norm,
  ff_proj, up_proj, ff_out}`` (``att_proj`` instead of q/k/v for the ``"sequential"`` block, ``q_norm``/``k_norm``
  with ``attention_layer_norm``), ``model.transformer.ln_f`` and, unless ``weight_tying``, ``model.transformer.ff_out``;
* the same math: token embedding (times ``sqrt(d_model)`` with ``input_emb_norm``), pre-norm blocks
  ``x + attn(norm(x))`` then ``x + ff_out(act(ff_proj(norm(x))) * up_proj(norm(x)))`` (``"llama"``) or
  ``x + ff_out(act(ff_proj(norm(x))))`` (``"sequential"``), RMS norms computed in float32, rotary embeddings in the
  non-interleaved layout rotated in float32 (``rope_full_precision``), bidirectional attention with grouped-query
  heads, a final norm ``ln_f`` whose output feeds the output projection, logits over all ``embedding_size`` rows
  (not sliced to ``vocab_size``, as upstream), optionally scaled by ``1 / sqrt(d_model)``.

What differs, and why:

* ``attention_mask`` (``(B, L)``, 1 = real token, 0 = padding) is honoured: padding keys get no attention. The
  published code builds a bias from the mask and then calls attention with ``attn_mask=None``, so its real-token
  outputs change with the padding. Without padding (no mask, or a mask of ones) the two compute the same logits; this
  is the port's only numerical deviation. A prepared 4D mask (``(B, 1, L, L)``, boolean "may attend" or additive
  float) is accepted too, with ``"sdpa"`` and ``"eager"``.
* Attention goes through transformers' attention interface (``config._attn_implementation``): ``"sdpa"`` by default,
  ``"eager"``, or ``"flash_attention_2"`` when flash-attn is installed; upstream calls a ``torch.compile``-d SDPA (or
  ``flash_attn_func`` when ``flash_attention=True``) and flips the process-wide ``torch.backends.cuda`` SDPA switches on
  construction. The kernels compute the same attention up to floating-point reordering.
* Rotary tables are computed per call at explicit ``position_ids`` (default ``arange(L)``). For block decoding the
  forward takes a [`~prism_hf.models.cache.BlockKVCache`] as ``cache`` (Fast-dLLM's prefix / dual cache,
  re-expressed: fill once over the whole sequence, then run only a window of positions against the cached keys and
  values of the rest); Fast-dLLM's ``replace_position`` argument raises with a pointer to it, as do ``labels``
  (LLaDA's loss depends on the masking ratio; see ``prism_hf.training.losses``), ``attention_bias`` (pass a 4D
  ``attention_mask``) and ``output_attentions=True`` (upstream raises too).
* The forward follows transformers' argument order ``(input_ids, attention_mask, position_ids, inputs_embeds, ...)``
  and returns a `CausalLMOutputWithPast` with ``logits`` and, with ``output_hidden_states``, upstream's hidden states
  (the input of every block, then the final normed state: ``n_layers + 1`` tensors). ``return_dict=False`` returns
  ``(logits,)`` or ``(logits, hidden_states)`` (upstream puts its unused key/value list in between).
* The config's defaults are LLaDA-8B's, and options the port does not implement raise (see [`LLaDAConfig`]).
* A fresh model is initialised with upstream's ``init_fn`` scheme (``reset_parameters``), through
  `transformers.initialization`; upstream's ``LLaDAModelLM`` skips it (``init_params=False``) and keeps PyTorch's
  defaults. With ``init_fn="full_megatron"`` the llama block's q/k/v, ``ff_proj`` and ``up_proj`` are initialised as
  input projections (upstream raises for them).
* `LLaDAModelLM.from_pretrained` raises when the checkpoint's keys do not match the config (missing or unexpected
  keys) instead of warning and randomly initialising what is missing.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.integrations.sdpa_attention import repeat_kv
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ..cache import BlockKVCache, pop_cache_argument
from .configuration_llada import LLaDAConfig

__all__ = [
    "LLaDAModelLM",
    "LLaDAPreTrainedModel",
    "LLaDAModel",
    "LLaDABlock",
    "LLaDALlamaBlock",
    "LLaDASequentialBlock",
    "LLaDALayerNorm",
    "LLaDARotaryEmbedding",
]

#: Epsilon of upstream's ``"default"`` LayerNorm, which does not read ``rms_norm_eps``.
DEFAULT_LAYER_NORM_EPS = 1e-5

#: Forward arguments of the published code that the port refuses (with the reason), rather than ignore.
_REFUSED_FORWARD_KWARGS = {
    "replace_position": (
        "Fast-dLLM's in-place cache replacement is BlockKVCache.set_window(positions) here: pass the window's tokens "
        "with cache=cache"
    ),
    "attention_bias": "pass a 4D attention_mask of shape (batch_size, 1, seq_len, seq_len) instead",
    "labels": (
        "LLaDA's training loss depends on the masking ratio of each row, so the model does not compute it "
        "(upstream only warns); compute it from the logits, e.g. with prism_hf.training.losses"
    ),
}


def _swiglu(x: torch.Tensor) -> torch.Tensor:
    """Upstream's SwiGLU: ``silu(gate) * x`` on the two halves ``(x, gate)`` of the last dimension."""
    x, gate = x.chunk(2, dim=-1)
    return F.silu(gate) * x


#: MLP activations by ``config.activation_type`` (upstream's ``Activation.build``; GELU is the exact, erf form).
ACTIVATIONS: dict = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu, "swiglu": _swiglu}


def _init_role(module: nn.Module, role: str, fan_in: int, layer_idx: Optional[int] = None, std_factor: float = 1.0) -> nn.Module:
    """Record how [`LLaDAPreTrainedModel._init_weights`] initialises ``module`` (see [`_init_linear_weight`]).

    transformers only passes modules that own parameters to ``_init_weights`` (for code outside its tree), so each
    linear layer and the embedding carry their role themselves rather than being initialised by their block."""
    module._llada_init = (role, fan_in, layer_idx, std_factor)
    return module


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last dimension (the non-interleaved rotary layout)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(
    query: torch.Tensor, key: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, full_precision: bool = True
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rotate queries and keys by their positions, as upstream's ``RotaryEmbedding.forward``.

    Args:
        query (`torch.Tensor` of shape `(B, n_heads, L, head_dim)`): Queries.
        key (`torch.Tensor` of shape `(B, n_kv_heads, L, head_dim)`): Keys.
        cos, sin (`torch.Tensor` of shape `(B or 1, L, head_dim)`, float32): Tables from [`LLaDARotaryEmbedding`].
        full_precision (`bool`): Rotate in float32 (upstream's ``rope_full_precision``); otherwise in the dtype of
            the queries, with the tables cast to it.

    Returns:
        The rotated ``(query, key)``, in their input dtypes.
    """
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)

    def rotate(t: torch.Tensor) -> torch.Tensor:
        t_ = t.float() if full_precision else t
        return ((t_ * cos.to(t_.dtype)) + (rotate_half(t_) * sin.to(t_.dtype))).to(t.dtype)

    return rotate(query), rotate(key)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Plain PyTorch attention (``attn_implementation="eager"``): softmax in float32, grouped-query heads repeated.

    Args:
        module (`nn.Module`): The calling block (reads ``num_key_value_groups`` and ``training``).
        query (`torch.Tensor` of shape `(B, n_heads, L, head_dim)`), key, value (`torch.Tensor` of shape
            `(B, n_kv_heads, L, head_dim)`): Rotated queries and keys, and values.
        attention_mask (`torch.Tensor`, *optional*): Boolean (True = may attend) or additive, broadcastable to
            `(B, n_heads, L, L)`.
        scaling (`float`): Factor on the scores, ``head_dim ** -0.5``.
        dropout (`float`): Dropout on the attention weights.

    Returns:
        The attention output of shape `(B, L, n_heads, head_dim)` and the weights `(B, n_heads, L, L)`.
    """
    key = repeat_kv(key, module.num_key_value_groups)
    value = repeat_kv(value, module.num_key_value_groups)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


class LLaDALayerNorm(nn.Module):
    """Upstream's norms in one module: ``"default"`` LayerNorm, ``"rms"`` and ``"gemma_rms"`` (scale ``1 + weight``).

    The RMS variants normalise in float32 with autocast off and cast back to the input dtype before the affine
    transform, as upstream. Without affine parameters ``weight`` and ``bias`` are `None` (no state-dict entries).

    Args:
        size (`int`): Normalised width.
        norm_type (`str`): ``"default"``, ``"rms"`` or ``"gemma_rms"``.
        eps (`float`): Added to the variance.
        affine (`bool`): Learn a ``weight``. bias (`bool`): Also learn a ``bias`` (only with ``affine``).
    """

    def __init__(self, size: int, norm_type: str, eps: float, affine: bool, bias: bool):
        super().__init__()
        self.norm_type = norm_type
        self.eps = eps
        self.normalized_shape = (size,)
        if affine:
            self.weight = nn.Parameter(torch.ones(size))
            self.bias = nn.Parameter(torch.zeros(size)) if bias else None
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    @classmethod
    def from_config(cls, config: LLaDAConfig, size: Optional[int] = None, affine: Optional[bool] = None) -> "LLaDALayerNorm":
        """The norm upstream's ``LayerNormBase.build`` makes: ``size`` defaults to ``d_model`` and ``affine`` to
        ``layer_norm_with_affine``; the epsilon is ``rms_norm_eps`` for the RMS variants and 1e-5 otherwise."""
        eps = DEFAULT_LAYER_NORM_EPS if config.layer_norm_type == "default" else config.rms_norm_eps
        affine = config.layer_norm_with_affine if affine is None else affine
        return cls(size or config.d_model, config.layer_norm_type, eps, bool(affine), config.norm_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_type == "default":
            return F.layer_norm(x, self.normalized_shape, weight=self.weight, bias=self.bias, eps=self.eps)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x_float = x.float()
            normed = (x_float * torch.rsqrt(x_float.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        if self.weight is None:
            return normed
        out = normed * (self.weight if self.norm_type == "rms" else 1 + self.weight)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, type={self.norm_type}, eps={self.eps}"


class LLaDARotaryEmbedding(nn.Module):
    """Rotary tables at explicit positions: ``cos`` and ``sin`` of ``position * inv_freq`` (each half repeated).

    The frequencies ``1 / rope_theta ** (2i / head_dim)`` are recomputed in float32 at each call (``head_dim / 2``
    numbers), so the module has no buffer to initialise, load or keep in float32 when the model runs in bfloat16.
    """

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        self.head_dim = config.head_dim
        self.rope_theta = config.rope_theta

    def inv_freq(self, device: Optional[torch.device] = None) -> torch.Tensor:
        """Inverse frequencies of shape `(head_dim // 2,)`, float32."""
        exponents = torch.arange(0, self.head_dim, 2, device=device, dtype=torch.float) / self.head_dim
        return 1.0 / (self.rope_theta**exponents)

    def forward(self, position_ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            position_ids (`torch.LongTensor` of shape `(B or 1, L)`): Position of every token.

        Returns:
            ``(cos, sin)``, each of shape `(B or 1, L, head_dim)` and dtype float32.
        """
        with torch.autocast(device_type=position_ids.device.type, enabled=False):
            freqs = position_ids[..., None].float() * self.inv_freq(position_ids.device)
            angles = torch.cat((freqs, freqs), dim=-1)
            return angles.cos(), angles.sin()


class LLaDABlock(GradientCheckpointingLayer):
    """What upstream's blocks share: the optional q/k norms, ``attn_out``, ``ff_out``, residual dropout and attention.

    Subclasses add the norms and input projections and define ``forward``. The attention reads queries, keys and
    values already projected to `(B, L, width)`, applies the optional q/k norms, splits the heads, rotates queries and
    keys at the given positions and attends through ``ALL_ATTENTION_FUNCTIONS[config._attn_implementation]``
    (bidirectional: ``is_causal=False``). A key/value cache would slot in between the rotation and the attention.
    """

    def __init__(self, config: LLaDAConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_heads = config.n_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.num_key_value_groups = config.n_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.act_fn: Callable[[torch.Tensor], torch.Tensor] = ACTIVATIONS[config.activation_type]
        # Module order follows upstream, so state dicts list their keys in the same order.
        self.dropout = nn.Dropout(config.residual_dropout)
        self.k_norm: Optional[LLaDALayerNorm] = None
        self.q_norm: Optional[LLaDALayerNorm] = None
        if config.attention_layer_norm:
            affine = config.attention_layer_norm_with_affine
            self.k_norm = LLaDALayerNorm.from_config(config, size=self.num_key_value_heads * self.head_dim, affine=affine)
            self.q_norm = LLaDALayerNorm.from_config(config, affine=affine)
        self.attn_out = _init_role(
            nn.Linear(config.d_model, config.d_model, bias=config.include_bias), "out", config.d_model, layer_idx
        )
        mlp_out_width = config.intermediate_size // 2 if config.activation_type == "swiglu" else config.intermediate_size
        self.ff_out = _init_role(
            nn.Linear(mlp_out_width, config.d_model, bias=config.include_bias), "residual", mlp_out_width, layer_idx
        )

    def _input_projection(self, out_features: int, bias: bool) -> nn.Linear:
        """A ``d_model -> out_features`` projection initialised as an input projection."""
        return _init_role(nn.Linear(self.config.d_model, out_features, bias=bias), "in", self.config.d_model)

    @property
    def qkv_bias(self) -> bool:
        return bool(self.config.include_bias or self.config.include_qkv_bias)

    def attention(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        position_embeddings: Tuple[torch.Tensor, torch.Tensor],
        attention_mask: Optional[torch.Tensor] = None,
        cache: Optional[BlockKVCache] = None,
        **kwargs,
    ) -> torch.Tensor:
        """
        Args:
            query (`torch.Tensor` of shape `(B, L, d_model)`), key, value (`torch.Tensor` of shape
                `(B, L, n_kv_heads * head_dim)`): Projected inputs.
            position_embeddings (`tuple(torch.Tensor)`): ``(cos, sin)`` from [`LLaDARotaryEmbedding`].
            attention_mask (`torch.Tensor`, *optional*): The mask prepared by [`LLaDAModel`] for the attention
                implementation (`None` when nothing is masked).
            cache ([`~prism_hf.models.cache.BlockKVCache`], *optional*): Stores the rotated keys and values
                (fill) or supplies those of the rest of the sequence (window forward).

        Returns:
            `torch.Tensor` of shape `(B, L, d_model)`: the attention output after ``attn_out``.
        """
        batch_size, seq_len, _ = query.shape
        if self.q_norm is not None:
            dtype = key.dtype
            query = self.q_norm(query).to(dtype)
            key = self.k_norm(key).to(dtype)
        query = query.view(batch_size, seq_len, self.num_heads, self.head_dim).transpose(1, 2)
        key = key.view(batch_size, seq_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        value = value.view(batch_size, seq_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        cos, sin = position_embeddings
        query, key = apply_rotary_pos_emb(query, key, cos, sin, full_precision=self.config.rope_full_precision)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)

        attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        output, _ = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.config.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            is_causal=False,
            **kwargs,
        )
        return self.attn_out(output.reshape(batch_size, seq_len, self.num_heads * self.head_dim).contiguous())


class LLaDALlamaBlock(LLaDABlock):
    """Upstream's ``"llama"`` block (every released LLaDA): ``x + attn(attn_norm(x))``, then
    ``x + ff_out(act(ff_proj(h)) * up_proj(h))`` with ``h = ff_norm(x)``, q/k/v as separate ``nn.Linear`` layers."""

    def __init__(self, config: LLaDAConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.attn_norm = LLaDALayerNorm.from_config(config)
        self.ff_norm = LLaDALayerNorm.from_config(config)
        kv_width = self.num_key_value_heads * self.head_dim
        self.q_proj = self._input_projection(config.d_model, self.qkv_bias)
        self.k_proj = self._input_projection(kv_width, self.qkv_bias)
        self.v_proj = self._input_projection(kv_width, self.qkv_bias)
        self.ff_proj = self._input_projection(config.intermediate_size, config.include_bias)
        self.up_proj = self._input_projection(config.intermediate_size, config.include_bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        position_embeddings: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        **kwargs,
    ) -> torch.Tensor:
        """
        Args:
            hidden_states (`torch.Tensor` of shape `(B, L, d_model)`): The residual stream.
            attention_mask (`torch.Tensor`, *optional*): Prepared mask (see [`LLaDABlock.attention`]).
            position_embeddings (`tuple(torch.Tensor)`): Rotary ``(cos, sin)`` tables.

        Returns:
            `torch.Tensor` of shape `(B, L, d_model)`.
        """
        normed = self.attn_norm(hidden_states)
        attn = self.attention(
            self.q_proj(normed), self.k_proj(normed), self.v_proj(normed), position_embeddings, attention_mask, **kwargs
        )
        hidden_states = hidden_states + self.dropout(attn)
        normed = self.ff_norm(hidden_states)
        mlp = self.ff_out(self.act_fn(self.ff_proj(normed)) * self.up_proj(normed))
        return hidden_states + self.dropout(mlp)


class LLaDASequentialBlock(LLaDABlock):
    """Upstream's ``"sequential"`` (OLMo) block: one fused ``att_proj`` for q/k/v and an ungated MLP
    ``ff_out(act(ff_proj(ff_norm(x))))``."""

    def __init__(self, config: LLaDAConfig, layer_idx: int):
        super().__init__(config, layer_idx)
        self.attn_norm = LLaDALayerNorm.from_config(config)
        self.ff_norm = LLaDALayerNorm.from_config(config)
        kv_width = self.num_key_value_heads * self.head_dim
        self.fused_dims = (config.d_model, kv_width, kv_width)
        self.att_proj = self._input_projection(sum(self.fused_dims), self.qkv_bias)
        self.ff_proj = self._input_projection(config.intermediate_size, config.include_bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        position_embeddings: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        **kwargs,
    ) -> torch.Tensor:
        """Same arguments and output as [`LLaDALlamaBlock.forward`]."""
        query, key, value = self.att_proj(self.attn_norm(hidden_states)).split(self.fused_dims, dim=-1)
        attn = self.attention(query, key, value, position_embeddings, attention_mask, **kwargs)
        hidden_states = hidden_states + self.dropout(attn)
        mlp = self.ff_out(self.act_fn(self.ff_proj(self.ff_norm(hidden_states))))
        return hidden_states + self.dropout(mlp)


BLOCK_CLASSES = {"llama": LLaDALlamaBlock, "sequential": LLaDASequentialBlock}


class LLaDAModel(nn.Module):
    """Upstream's ``LLaDAModel``: a ``transformer`` ModuleDict with ``wte``, ``emb_drop``, ``ln_f``, ``blocks`` and
    ``ff_out`` (the output projection; its weight is ``wte``'s with ``weight_tying``). Returns logits, not a last
    hidden state: hook ``transformer.ln_f`` to read the final normed hidden state."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            {
                "wte": _init_role(
                    nn.Embedding(config.padded_vocab_size, config.d_model),
                    "emb",
                    config.d_model,
                    # upstream widens the embedding's init when the logits are scaled down by 1 / sqrt(d_model)
                    std_factor=0.5 * math.sqrt(config.d_model) if config.scale_logits else 1.0,
                ),
                "emb_drop": nn.Dropout(config.embedding_dropout),
                "ln_f": LLaDALayerNorm.from_config(config),
            }
        )
        block_class = BLOCK_CLASSES[config.block_type]
        self.transformer["blocks"] = nn.ModuleList([block_class(config, i) for i in range(config.n_layers)])
        # Tied to wte, upstream computes F.linear(x, wte.weight) without a bias.
        self.transformer["ff_out"] = _init_role(
            nn.Linear(config.d_model, config.padded_vocab_size, bias=config.include_bias and not config.weight_tying),
            "final_out",
            config.d_model,
        )
        self.rotary_emb = LLaDARotaryEmbedding(config)

    def prepare_attention_mask(self, attention_mask: Optional[torch.Tensor], inputs_embeds: torch.Tensor) -> Optional[torch.Tensor]:
        """Turn the caller's mask into what the configured attention implementation reads.

        Args:
            attention_mask (`torch.Tensor`, *optional*): `(B, L)` padding mask (1 = real token), or a prepared 4D
                mask `(B or 1, 1 or n_heads, L, L)`, boolean (True = may attend) or additive.
            inputs_embeds (`torch.Tensor` of shape `(B, L, d_model)`): The embeddings (for batch, length, dtype).

        Returns:
            `None` when nothing is masked; otherwise the mask built by `create_bidirectional_mask` (boolean for
            ``"sdpa"``, additive for ``"eager"``, the 2D mask for flash attention), or the 4D mask as given (additive
            masks cast to the embeddings' dtype).
        """
        if attention_mask is None:
            return None
        if attention_mask.dim() == 4:
            implementation = self.config._attn_implementation or ""
            if "flash" in implementation:
                raise ValueError(
                    f"A 4D attention_mask cannot be used with attn_implementation={implementation!r} (flash attention "
                    "only takes a (batch_size, seq_len) padding mask); load the model with attn_implementation='sdpa' "
                    "or 'eager', or pass a 2D mask."
                )
            if attention_mask.dtype != torch.bool:
                attention_mask = attention_mask.to(inputs_embeds.dtype)
            return attention_mask
        return create_bidirectional_mask(config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask)

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        inputs_embeds: Optional[torch.FloatTensor] = None,
        output_hidden_states: bool = False,
        cache: Optional[BlockKVCache] = None,
        **kwargs,
    ) -> Tuple[torch.Tensor, Optional[Tuple[torch.Tensor, ...]]]:
        """Logits of shape `(B, L, embedding_size)` and, with ``output_hidden_states``, the input of every block and
        the output of ``ln_f`` (``n_layers + 1`` tensors of shape `(B, L, d_model)`). Arguments as in
        [`LLaDAModelLM.forward`], already validated there."""
        config = self.config
        hidden_states = self.transformer["wte"](input_ids) if inputs_embeds is None else inputs_embeds
        if config.input_emb_norm:
            hidden_states = hidden_states * (config.d_model**0.5)
        hidden_states = self.transformer["emb_drop"](hidden_states)
        window = None if cache is None else cache.window
        if position_ids is None:
            position_ids = window if window is not None else torch.arange(hidden_states.shape[1], device=hidden_states.device).unsqueeze(0)
        position_embeddings = self.rotary_emb(position_ids)
        if window is not None:
            mask = cache.window_attention_mask(attention_mask, config._attn_implementation, hidden_states.dtype)
        else:
            mask = self.prepare_attention_mask(attention_mask, hidden_states)

        all_hidden_states = []
        for block in self.transformer["blocks"]:
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
            hidden_states = block(
                hidden_states, attention_mask=mask, position_embeddings=position_embeddings, cache=cache,
                **kwargs,
            )
        hidden_states = self.transformer["ln_f"](hidden_states)
        if output_hidden_states:
            all_hidden_states.append(hidden_states)
        logits = self.transformer["ff_out"](hidden_states)
        if config.scale_logits:
            logits = logits * (1 / math.sqrt(config.d_model))
        return logits, (tuple(all_hidden_states) if output_hidden_states else None)


def _init_linear_weight(
    config: LLaDAConfig,
    weight: torch.Tensor,
    role: str,
    fan_in: int,
    layer_idx: Optional[int] = None,
    std_factor: float = 1.0,
) -> None:
    """Upstream's ``init_weights`` for one weight, by ``config.init_fn``.

    Args:
        config ([`LLaDAConfig`]): Reads ``init_fn``, ``init_std``, ``init_cutoff_factor``, ``n_layers``, ``d_model``.
        weight (`torch.Tensor`): The weight to fill (skipped when already loaded: `transformers.initialization`).
        role (`str`): ``"in"`` (input projections), ``"out"`` (``attn_out``), ``"residual"`` (a block's ``ff_out``),
            ``"emb"`` (``wte``) or ``"final_out"`` (the output projection): ``"normal"`` divides the residual
            projections' std by ``sqrt(2 n_layers)`` and ``"full_megatron"`` picks its std by role.
        fan_in (`int`): Input width, for ``"mitchell"`` and ``"fan_in"``.
        layer_idx (`int`, *optional*): Block index; ``"mitchell"`` divides the std of ``attn_out`` and ``ff_out`` by
            ``sqrt(2 (layer_idx + 1))``.
        std_factor (`float`): Multiplies the std (upstream: ``0.5 sqrt(d_model)`` for ``wte`` with ``scale_logits``).
    """
    init_fn = config.init_fn
    if init_fn == "kaiming_normal":
        init.kaiming_normal_(weight, nonlinearity="relu")
        return
    if init_fn in ("mitchell", "fan_in"):
        std = std_factor / math.sqrt(fan_in)
        if init_fn == "fan_in":
            init.normal_(weight, mean=0.0, std=std)
            return
        if layer_idx is not None:
            std = std / math.sqrt(2 * (layer_idx + 1))
        init.trunc_normal_(weight, mean=0.0, std=std, a=-3 * std, b=3 * std)
        return
    if init_fn == "normal":
        std = config.init_std * std_factor
        if role == "residual":
            std = std / math.sqrt(2 * config.n_layers)
        cutoff = config.init_cutoff_factor
    else:  # full_megatron
        std = {
            "in": config.init_std,
            "emb": config.init_std,
            "out": config.init_std / math.sqrt(2.0 * config.n_layers),
            "residual": config.init_std / math.sqrt(2.0 * config.n_layers),
            "final_out": config.d_model**-0.5,
        }[role]
        cutoff = 3 if config.init_cutoff_factor is None else config.init_cutoff_factor
    if cutoff is None:
        init.normal_(weight, mean=0.0, std=std)
    else:
        init.trunc_normal_(weight, mean=0.0, std=std, a=-cutoff * std, b=cutoff * std)


class LLaDAPreTrainedModel(PreTrainedModel):
    """Base class of the LLaDA port: its config class, upstream's initialisation, the attention implementations it
    supports (``"sdpa"``, ``"eager"``, flash attention; not flex attention) and gradient checkpointing per block."""

    config: LLaDAConfig
    config_class = LLaDAConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LLaDALlamaBlock", "LLaDASequentialBlock"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = False
    _supports_attention_backend = True
    #: The forward takes a [`~prism_hf.models.cache.BlockKVCache`] as ``cache`` (block decoding).
    supports_block_kv_cache = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Upstream's ``reset_parameters``: ones and zeros for the norms; for the embedding and every linear layer
        the ``init_fn`` rule of its role (see [`_init_linear_weight`]; the role is recorded at construction), and
        zero biases. The output projection of a weight-tied model is the embedding and is left to it."""
        config = self.config
        if isinstance(module, LLaDALayerNorm):
            if module.weight is not None:
                init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
            return
        role = getattr(module, "_llada_init", None)
        if role is None:
            return
        role, fan_in, layer_idx, std_factor = role
        if not (role == "final_out" and config.weight_tying):
            _init_linear_weight(config, module.weight, role, fan_in, layer_idx=layer_idx, std_factor=std_factor)
        if getattr(module, "bias", None) is not None:
            init.zeros_(module.bias)


class LLaDAModelLM(LLaDAPreTrainedModel):
    r"""LLaDA with its output projection, loadable from ``GSAI-ML/LLaDA-8B-Instruct`` (and ``-Base``, ``LLaDA-1.5``)
    without remote code.

    The module tree is upstream's (``model.transformer.{wte, blocks.{i}, ln_f, ff_out}``), so the Hub's safetensors
    load as they are; ``model.transformer.ln_f``'s output is the final normed hidden state (PRISM's quality head reads
    it through a forward hook). Loading raises when the checkpoint's keys do not match the config.

    Example:
        ```python
        import torch
        import prism_hf.models.llada  # registers model_type "llada" with AutoConfig / AutoModel
        from transformers import AutoModel

        model = AutoModel.from_pretrained("GSAI-ML/LLaDA-8B-Instruct", dtype=torch.bfloat16)  # no trust_remote_code
        ids = torch.full((1, 64), model.config.mask_token_id)
        logits = model(ids).logits  # (1, 64, 126464)
        ```
    """

    _tied_weights_keys = {"model.transformer.ff_out.weight": "model.transformer.wte.weight"}

    def __init__(self, config: LLaDAConfig):
        super().__init__(config)
        self.model = LLaDAModel(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer["wte"]

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.transformer["wte"] = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.model.transformer["ff_out"]

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.model.transformer["ff_out"] = value

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, except that a checkpoint whose keys do not match the model built from
        its config (missing or unexpected keys) raises a `ValueError` listing them, instead of a warning and random
        initialisation of what is missing. Every other argument is passed through (``dtype``, ``device_map``,
        ``attn_implementation``, ``output_loading_info``, ...)."""
        output_loading_info = kwargs.pop("output_loading_info", False)
        model, loading_info = super().from_pretrained(
            pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
        )
        problems = []
        for kind, meaning in (("missing_keys", "expected by the config, absent from the checkpoint"),
                              ("unexpected_keys", "in the checkpoint, unknown to the config")):
            keys = sorted(loading_info.get(kind) or ())
            if keys:
                shown = ", ".join(keys[:20]) + (f", ... ({len(keys) - 20} more)" if len(keys) > 20 else "")
                problems.append(f"{len(keys)} {kind} ({meaning}): {shown}")
        if problems:
            raise ValueError(
                f"The checkpoint at {pretrained_model_name_or_path!r} does not match its config "
                f"(n_layers={model.config.n_layers}, block_type={model.config.block_type!r}, "
                f"weight_tying={model.config.weight_tying}); refusing to initialise weights at random:\n  "
                + "\n  ".join(problems)
            )
        return (model, loading_info) if output_loading_info else model

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        inputs_embeds: Optional[torch.FloatTensor] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        cache: Optional[BlockKVCache] = None,
        use_cache: Optional[bool] = None,
        **kwargs,
    ) -> Union[Tuple[torch.Tensor, ...], CausalLMOutputWithPast]:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, seq_len)`): Token ids, mask tokens
                (``config.mask_token_id``) included. Exactly one of ``input_ids`` and ``inputs_embeds``.
            attention_mask (`torch.Tensor`, *optional*): `(batch_size, seq_len)` with 1 for real tokens and 0 for
                padding (padding keys get no attention; upstream ignores the mask), or a prepared 4D mask
                `(batch_size or 1, 1 or n_heads, seq_len, seq_len)`, boolean (True = may attend) or additive.
            position_ids (`torch.LongTensor` of shape `(batch_size or 1, seq_len)`, *optional*): Rotary positions;
                defaults to ``arange(seq_len)`` (pass ``attention_mask.cumsum(-1) - 1`` with left padding).
            inputs_embeds (`torch.FloatTensor` of shape `(batch_size, seq_len, d_model)`, *optional*): Used instead of
                the token embedding (``input_emb_norm`` still scales them, as upstream).
            output_hidden_states (`bool`, *optional*): Also return the input of every block and the final normed
                hidden state. Defaults to ``config.output_hidden_states``.
            return_dict (`bool`, *optional*): Return a `CausalLMOutputWithPast` (default: ``config.return_dict``)
                rather than a tuple.
            cache ([`~prism_hf.models.cache.BlockKVCache`], *optional*): A block-decoding cache. Without a
                window set, this forward covers the whole sequence and fills it. With a window
                (``cache.set_window(positions)``), ``input_ids`` are the tokens at those positions (shape of the
                window), ``position_ids`` default to them, ``attention_mask`` is the `(batch_size, cached_length)`
                padding mask of the whole sequence, and the other positions' keys and values come from the cache.
            use_cache (`bool`, *optional*): With no ``cache``, create a cache, fill it and return it as
                ``cache`` of the output.
            kwargs: Passed to the attention implementation. ``output_attentions=True``, ``cache``,
                ``replace_position``, ``attention_bias`` and ``labels`` raise a `ValueError` (see the module
                docstring).

        Returns:
            [`~transformers.modeling_outputs.CausalLMOutputWithPast`] with ``logits`` of shape
            `(batch_size, seq_len, embedding_size)` and, when asked, ``hidden_states`` (``n_layers + 1`` tensors of
            shape `(batch_size, seq_len, d_model)`); or the tuple ``(logits,)`` / ``(logits, hidden_states)``.
        """
        cache = pop_cache_argument(cache, kwargs)
        self._refuse_unsupported_kwargs(kwargs)
        if cache is None and use_cache:
            cache = BlockKVCache()
        window = None if cache is None else cache.window
        self._validate_inputs(input_ids, attention_mask, position_ids, inputs_embeds, window=window)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if return_dict is None:
            return_dict = self.config.return_dict
        logits, hidden_states = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            output_hidden_states=bool(output_hidden_states),
            cache=cache,
            **kwargs,
        )
        output = CausalLMOutputWithPast(logits=logits, hidden_states=hidden_states, cache=cache)
        return output if return_dict else output.to_tuple()

    @staticmethod
    def _refuse_unsupported_kwargs(kwargs: dict) -> None:
        if kwargs.pop("output_attentions", None):
            raise ValueError("output_attentions=True is not supported by LLaDA (the published code refuses it too).")
        for name, reason in _REFUSED_FORWARD_KWARGS.items():
            if kwargs.pop(name, None) is not None:
                raise ValueError(f"{name} is not supported by the native LLaDA port: {reason}.")

    def _validate_inputs(
        self,
        input_ids: Optional[torch.Tensor],
        attention_mask: Optional[torch.Tensor],
        position_ids: Optional[torch.Tensor],
        inputs_embeds: Optional[torch.Tensor],
        window: Optional[torch.Tensor] = None,
    ) -> None:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError(
                "Pass exactly one of input_ids and inputs_embeds; got "
                f"{'both' if input_ids is not None else 'neither'}."
            )
        if input_ids is not None:
            if not torch.is_tensor(input_ids) or input_ids.dim() != 2 or input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
                shape = (tuple(input_ids.shape), input_ids.dtype) if torch.is_tensor(input_ids) else type(input_ids).__name__
                raise ValueError(f"input_ids must be an integer tensor of shape (batch_size, seq_len); got {shape}.")
            batch_size, seq_len = input_ids.shape
        else:
            if not torch.is_tensor(inputs_embeds) or inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.d_model:
                shape = tuple(inputs_embeds.shape) if torch.is_tensor(inputs_embeds) else type(inputs_embeds).__name__
                raise ValueError(
                    f"inputs_embeds must be a tensor of shape (batch_size, seq_len, d_model={self.config.d_model}); got {shape}."
                )
            batch_size, seq_len = inputs_embeds.shape[:2]
        if window is not None:
            if (batch_size, seq_len) != tuple(window.shape):
                raise ValueError(
                    f"The cache's window holds positions of shape {tuple(window.shape)}; a window forward takes the tokens "
                    f"at those positions, but got input of shape {(batch_size, seq_len)}."
                )
            if attention_mask is not None and attention_mask.dim() != 2:
                raise ValueError("A window forward takes the (batch_size, cached_length) padding mask, not a 4D mask.")
            attention_mask = None  # checked against the cached length by the cache itself
        if attention_mask is not None:
            shape = tuple(attention_mask.shape)
            valid_2d = attention_mask.dim() == 2 and shape == (batch_size, seq_len)
            valid_4d = (
                attention_mask.dim() == 4
                and shape[0] in (1, batch_size)
                and shape[1] in (1, self.config.n_heads)
                and shape[2:] == (seq_len, seq_len)
            )
            if not (valid_2d or valid_4d):
                raise ValueError(
                    f"attention_mask has shape {shape}; expected ({batch_size}, {seq_len}) (1 = real token, 0 = padding) "
                    f"or a 4D mask ({batch_size} or 1, 1 or {self.config.n_heads}, {seq_len}, {seq_len})."
                )
        if position_ids is not None:
            if (
                position_ids.dim() != 2
                or position_ids.shape[0] not in (1, batch_size)
                or position_ids.shape[1] != seq_len
                or position_ids.dtype.is_floating_point
            ):
                raise ValueError(
                    f"position_ids must be an integer tensor of shape ({batch_size} or 1, {seq_len}); got "
                    f"{tuple(position_ids.shape)} of dtype {position_ids.dtype}."
                )
