"""A native port of MDLM's diffusion transformer (the model of ``kuleshov-group/mdlm-owt``).

The Hub checkpoint ships remote code that does not load under transformers 5 (its ``MDLM.__init__`` never calls
``post_init()``) and imports ``flash_attn`` unconditionally. This module re-implements the same network with
stock PyTorch:

* the same module and parameter names and shapes, so the checkpoint's ``model.safetensors`` loads with
  ``strict=True`` (keys ``backbone.vocab_embed.embedding``, ``backbone.sigma_map.mlp.{0,2}.*``,
  ``backbone.rotary_emb.inv_freq``, ``backbone.blocks.{i}.*``, ``backbone.output_layer.*``);
* the same math: a timestep embedding (zeroed without time conditioning) mapped through SiLU drives an adaLN
  shift / scale / gate for both residual branches of every block and a shift / scale for the final layer;
  weight-only LayerNorms computed in float32; rotary embeddings on queries and keys in the non-interleaved
  ("rotate half") layout, base 10000; bidirectional attention without a mask or attention dropout;
  ``residual + gate * dropout(branch)`` residual updates; ``linear(modulate(norm_final(x)))`` logits;
* `torch.nn.functional.scaled_dot_product_attention` instead of flash-attn's packed varlen kernel (with equal
  sequence lengths, as upstream always calls it, the two compute the same attention).

Differences, all outside the math: upstream wraps its blocks in ``torch.cuda.amp.autocast(dtype=bfloat16)``;
this port uses the precision you run it in (wrap the call in ``torch.autocast("cuda", dtype=torch.bfloat16)``
to match upstream's GPU numerics). The norms cast back to their input's dtype and the timestep features to the
embedding MLP's dtype, so a model loaded in ``bfloat16`` runs without autocast (upstream would raise a dtype
error). ``return_dict=None`` returns the bare logits tensor (upstream falls back to ``config.use_return_dict``).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import MaskedLMOutput

from .configuration_mdlm import MDLMConfig

__all__ = ["MDLMForMaskedLM", "MDLMPreTrainedModel", "DITBackbone", "DDiTBlock", "DDitFinalLayer"]

#: Width of the sinusoidal features of the timestep, before the embedding MLP (fixed upstream).
TIMESTEP_FREQUENCY_DIM = 256
#: Base of the rotary embedding frequencies (fixed upstream).
ROTARY_BASE = 10_000
#: MLP width as a multiple of ``hidden_dim`` (fixed upstream).
MLP_RATIO = 4


def bias_dropout_add_scale(
    x: torch.Tensor,
    bias: Optional[torch.Tensor],
    scale: torch.Tensor,
    residual: Optional[torch.Tensor],
    prob: float,
    training: bool,
) -> torch.Tensor:
    """Gated residual update of a DiT branch: ``residual + scale * dropout(x + bias)``.

    Args:
        x (`torch.Tensor` of shape `(B, L, d)`): Output of the branch (attention or MLP).
        bias (`torch.Tensor`, *optional*): Added before dropout (MDLM passes none).
        scale (`torch.Tensor` of shape `(B, 1, d)`): The adaLN gate.
        residual (`torch.Tensor` of shape `(B, L, d)`, *optional*): The stream the branch is added to.
        prob (`float`): Dropout probability; training (`bool`): whether dropout is active.
    """
    if bias is not None:
        x = x + bias
    out = scale * F.dropout(x, p=prob, training=training)
    return out if residual is None else residual + out


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation ``x * (1 + scale) + shift``, with ``shift`` and ``scale`` of shape `(B, 1, d)`."""
    return x * (1 + scale) + shift


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last dimension (the non-interleaved rotary layout)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys by position, computed in float32 and cast back to ``x``'s dtype.

    Args:
        x (`torch.Tensor` of shape `(B, L, H, D)`): Queries or keys.
        cos, sin (`torch.Tensor` of shape `(L, D)`): Tables from [`MDLMRotary`] (each half-table repeated twice).
    """
    xf = x.float()
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)


class LayerNorm(nn.Module):
    """MDLM's LayerNorm: no bias, normalised in float32 with autocast off, then scaled by ``weight``."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            normed = F.layer_norm(x.float(), [self.dim])
        return (normed * self.weight.float()).to(x.dtype)


class MDLMRotary(nn.Module):
    """Rotary position tables for heads of width ``head_dim``.

    ``inv_freq`` is a persistent buffer only because the checkpoint stores it (``backbone.rotary_emb.inv_freq``);
    the tables are computed from fresh float32 frequencies at every call (``L x head_dim``, negligible next to a
    block), so they follow the input's length and device and keep full precision in a model loaded in bfloat16.
    """

    def __init__(self, head_dim: int, base: int = ROTARY_BASE):
        super().__init__()
        self.head_dim = head_dim
        self.base = base
        self.register_buffer("inv_freq", self.compute_inv_freq(), persistent=True)

    def compute_inv_freq(self, device=None) -> torch.Tensor:
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device) / self.head_dim
        return 1.0 / (self.base**exponents)

    def forward(self, x: torch.Tensor, seq_dim: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return ``(cos, sin)``, each of shape `(L, head_dim)` and dtype float32, for ``L = x.shape[seq_dim]``."""
        positions = torch.arange(x.shape[seq_dim], device=x.device, dtype=torch.float32)
        freqs = torch.outer(positions, self.compute_inv_freq(device=x.device))
        angles = torch.cat((freqs, freqs), dim=-1)
        return angles.cos(), angles.sin()


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of a scalar timestep per row (cos half, then sin half), then ``Linear-SiLU-Linear``."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = TIMESTEP_FREQUENCY_DIM):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: int = 10_000) -> torch.Tensor:
        """Features of shape `(B, dim)`, float32, for timesteps ``t`` of shape `(B,)`."""
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = self.timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class EmbeddingLayer(nn.Module):
    """Token embedding stored as a bare ``(vocab_size, dim)`` parameter named ``embedding`` (upstream's layout)."""

    def __init__(self, dim: int, vocab_dim: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(vocab_dim, dim))
        nn.init.kaiming_uniform_(self.embedding, a=math.sqrt(5))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(input_ids, self.embedding)


def _zero_linear(in_features: int, out_features: int) -> nn.Linear:
    """A linear layer that starts at zero (adaLN-Zero); the flag tells `_init_weights` to keep it so."""
    linear = nn.Linear(in_features, out_features, bias=True)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    linear._mdlm_zero_init = True
    return linear


class DDiTBlock(GradientCheckpointingLayer):
    """One DiT block: adaLN-modulated bidirectional attention with rotary positions, then an adaLN-modulated MLP,
    each added to the stream through a gate (``bias_dropout_add_scale``)."""

    def __init__(self, dim: int, n_heads: int, cond_dim: int, mlp_ratio: int = MLP_RATIO, dropout: float = 0.1):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.dropout = dropout
        self.norm1 = LayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.dropout1 = nn.Dropout(dropout)  # kept for the module tree; dropout is applied in bias_dropout_add_scale
        self.norm2 = LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim, bias=True),
            nn.GELU(approximate="tanh"),
            nn.Linear(mlp_ratio * dim, dim, bias=True),
        )
        self.dropout2 = nn.Dropout(dropout)
        self.adaLN_modulation = _zero_linear(cond_dim, 6 * dim)

    def forward(self, x: torch.Tensor, rotary_cos: torch.Tensor, rotary_sin: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x (`torch.Tensor` of shape `(B, L, d)`): The residual stream.
            rotary_cos, rotary_sin (`torch.Tensor` of shape `(L, head_dim)`): Rotary tables.
            c (`torch.Tensor` of shape `(B, cond_dim)`): Conditioning vector (SiLU of the timestep embedding).
        """
        batch_size, seq_len = x.shape[0], x.shape[1]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c)[:, None].chunk(6, dim=2)

        qkv = self.attn_qkv(modulate(self.norm1(x), shift_msa, scale_msa))
        query, key, value = qkv.view(batch_size, seq_len, 3, self.n_heads, self.head_dim).unbind(dim=2)
        query = apply_rotary(query, rotary_cos, rotary_sin)
        key = apply_rotary(key, rotary_cos, rotary_sin)
        attn = F.scaled_dot_product_attention(
            query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), dropout_p=0.0, is_causal=False
        )
        attn = attn.transpose(1, 2).reshape(batch_size, seq_len, self.n_heads * self.head_dim)
        x = bias_dropout_add_scale(self.attn_out(attn), None, gate_msa, x, self.dropout, self.training)

        branch = self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return bias_dropout_add_scale(branch, None, gate_mlp, x, self.dropout, self.training)


class DDitFinalLayer(nn.Module):
    """``linear(modulate(norm_final(x), shift, scale))``. ``norm_final``'s output is the last hidden state that
    PRISM's quality head reads (family registry: ``backbone.output_layer.norm_final``)."""

    def __init__(self, hidden_size: int, out_channels: int, cond_dim: int):
        super().__init__()
        self.norm_final = LayerNorm(hidden_size)
        self.linear = _zero_linear(hidden_size, out_channels)
        self.adaLN_modulation = _zero_linear(cond_dim, 2 * hidden_size)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c)[:, None].chunk(2, dim=2)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DITBackbone(nn.Module):
    """Token embedding, timestep conditioning, ``n_blocks`` DiT blocks and the final adaLN layer."""

    def __init__(self, config: MDLMConfig):
        super().__init__()
        self.config = config
        self.vocab_size = config.vocab_size
        self.vocab_embed = EmbeddingLayer(config.hidden_dim, config.vocab_size)
        self.sigma_map = TimestepEmbedder(config.cond_dim)
        self.rotary_emb = MDLMRotary(config.hidden_dim // config.n_heads)
        self.blocks = nn.ModuleList(
            [DDiTBlock(config.hidden_dim, config.n_heads, config.cond_dim, dropout=config.dropout) for _ in range(config.n_blocks)]
        )
        self.output_layer = DDitFinalLayer(config.hidden_dim, config.vocab_size, config.cond_dim)

    def forward(
        self, indices: torch.Tensor, sigma: torch.Tensor, output_hidden_states: bool = False
    ) -> Tuple[torch.Tensor, Tuple[torch.Tensor, ...]]:
        """Logits `(B, L, vocab_size)` and, with ``output_hidden_states``, the embedding output followed by every
        block's output (``n_blocks + 1`` tensors of shape `(B, L, hidden_dim)`)."""
        if not self.config.time_conditioning:
            sigma = torch.zeros_like(sigma)
        x = self.vocab_embed(indices)
        all_hidden_states = [x] if output_hidden_states else []
        c = F.silu(self.sigma_map(sigma))
        rotary_cos, rotary_sin = self.rotary_emb(x)
        for block in self.blocks:
            x = block(x, rotary_cos, rotary_sin, c)
            if output_hidden_states:
                all_hidden_states.append(x)
        return self.output_layer(x, c), tuple(all_hidden_states)


class MDLMPreTrainedModel(PreTrainedModel):
    config_class = MDLMConfig
    base_model_prefix = "mdlm"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DDiTBlock"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Upstream's initialisation (its modules' construction-time init): PyTorch's default for linear layers,
        Kaiming-uniform token embeddings, ones for norms, and zeros for every adaLN modulation and the output
        projection (adaLN-Zero: a fresh model's blocks are identities and its logits are zero)."""
        # Only modules that own parameters or buffers are visited here (transformers skips the others for code
        # outside its tree), so zero-initialised linears carry a flag rather than being zeroed by their parent.
        if isinstance(module, nn.Linear) and getattr(module, "_mdlm_zero_init", False):
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1.0 / math.sqrt(module.in_features)
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, EmbeddingLayer):
            init.kaiming_uniform_(module.embedding, a=math.sqrt(5))
        elif isinstance(module, LayerNorm):
            init.ones_(module.weight)
        elif isinstance(module, MDLMRotary):
            init.copy_(module.inv_freq, module.compute_inv_freq(device=module.inv_freq.device))


class MDLMForMaskedLM(MDLMPreTrainedModel):
    r"""MDLM's diffusion transformer with its masked-LM output, loadable from ``kuleshov-group/mdlm-owt`` without
    remote code.

    The module tree is upstream's (``backbone.vocab_embed``, ``backbone.blocks.{i}``, ``backbone.output_layer``),
    so the checkpoint's weights load with ``strict=True``. The logits cover the whole vocabulary, mask id included;
    MDLM's SUBS parameterisation (mask logit to minus infinity, unmasked positions copied) is applied by samplers
    and losses, not here.

    Example:
        ```python
        import torch
        import prism_hf.models.mdlm  # registers model_type "mdlm" with AutoConfig / AutoModelForMaskedLM
        from transformers import AutoModelForMaskedLM

        model = AutoModelForMaskedLM.from_pretrained("kuleshov-group/mdlm-owt")  # no trust_remote_code
        ids = torch.full((1, 1024), model.config.vocab_size - 1)  # all masks
        logits = model(ids, timesteps=torch.zeros(1))  # (1, 1024, 50258)
        ```
    """

    def __init__(self, config: MDLMConfig):
        super().__init__(config)
        self.backbone = DITBackbone(config)
        self.post_init()

    def get_input_embeddings(self) -> EmbeddingLayer:
        return self.backbone.vocab_embed

    def forward(
        self,
        input_ids: torch.LongTensor,
        timesteps: Union[torch.Tensor, float],
        output_hidden_states: Optional[bool] = False,
        return_dict: Optional[bool] = None,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, Tuple[torch.Tensor, ...]], MaskedLMOutput]:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): Token ids, mask tokens included.
                There is no attention mask: every position attends to every other (pack, do not pad).
            timesteps (`torch.Tensor` of shape `(batch_size,)`, or a scalar): Diffusion time per row. Ignored (zeroed)
                unless ``config.time_conditioning``; still required, as upstream.
            output_hidden_states (`bool`, *optional*): Also return the embedding output and every block's output.
            return_dict (`bool`, *optional*): Return a [`~transformers.modeling_outputs.MaskedLMOutput`]. Otherwise
                the bare logits tensor, or ``(logits, hidden_states)`` with ``output_hidden_states``.

        Returns:
            Logits of shape `(batch_size, sequence_length, vocab_size)` (bare, a tuple, or in a `MaskedLMOutput`).
        """
        if not torch.is_tensor(input_ids) or input_ids.dim() != 2 or input_ids.dtype.is_floating_point:
            shape = tuple(input_ids.shape) if torch.is_tensor(input_ids) else type(input_ids).__name__
            raise ValueError(f"input_ids must be an integer tensor of shape (batch_size, sequence_length); got {shape}.")
        batch_size = input_ids.shape[0]
        timesteps = torch.as_tensor(timesteps, device=input_ids.device)
        if timesteps.dim() == 0:
            timesteps = timesteps.expand(batch_size)
        if timesteps.shape != (batch_size,):
            raise ValueError(
                f"timesteps has shape {tuple(timesteps.shape)}; expected ({batch_size},) (one time per row of "
                "input_ids) or a scalar."
            )
        output_hidden_states = bool(output_hidden_states)
        logits, hidden_states = self.backbone(input_ids, timesteps, output_hidden_states=output_hidden_states)
        if return_dict:
            return MaskedLMOutput(logits=logits, hidden_states=hidden_states if output_hidden_states else None)
        if output_hidden_states:
            return logits, hidden_states
        return logits
