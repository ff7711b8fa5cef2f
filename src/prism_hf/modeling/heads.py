"""Quality heads: small modules mapping the backbone's last hidden state to one logit per position.

A head type is one class registered under a name in [`HEAD_REGISTRY`] (a read-only
[`~prism_hf.utils.registry.Registry`]); ``PrismConfig.head_type`` selects it and ``PrismConfig.head_kwargs`` are passed
to its constructor.
"""

from __future__ import annotations

from typing import Callable, Optional, Type

import torch
from torch import nn

from ..utils.registry import Registry

__all__ = [
    "QualityHead",
    "LinearQualityHead",
    "MLPQualityHead",
    "TransformerQualityHead",
    "register_head",
    "get_head_class",
    "HEAD_REGISTRY",
]

#: Head type name -> [`QualityHead`] subclass. Read-only: add one with [`register_head`].
HEAD_REGISTRY: Registry = Registry(
    "quality head", "head_type",
    how_to_add="Add one with `@prism_hf.modeling.heads.register_head('name')` on a `QualityHead` subclass.",
    on_register=lambda name, cls: setattr(cls, "head_type", name),
)


def register_head(name: str) -> Callable[[Type["QualityHead"]], Type["QualityHead"]]:
    """Class decorator: make a head type available as ``head_type=name``."""
    return HEAD_REGISTRY.decorator(name)


def get_head_class(name: str) -> Type["QualityHead"]:
    """The [`QualityHead`] subclass registered as ``name``; the error lists the valid head types."""
    if isinstance(name, str) and name in HEAD_REGISTRY:
        return HEAD_REGISTRY[name]
    raise ValueError(
        f"head_type={name!r} is not a known quality head; valid head types: {sorted(HEAD_REGISTRY)}. "
        f"{HEAD_REGISTRY.how_to_add}"
    )


class QualityHead(nn.Module):
    """Base class. Subclasses map ``hidden_states`` ``(B, L, d)`` to ``quality_logits`` ``(B, L)``."""

    head_type: str = ""
    #: Whether each position's logit depends on that position's hidden state only. A head that attends across
    #: positions (``transformer``) cannot score the window of a key/value-cached step on its own.
    pointwise: bool = True

    def __init__(self, hidden_size: int, **kwargs):
        super().__init__()
        self.hidden_size = hidden_size

    def forward(self, hidden_states: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError

    def reset_parameters(self) -> None:
        """Fresh initialisation: small weights, so the initial quality is close to 0.5 everywhere."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


@register_head("linear")
class LinearQualityHead(QualityHead):
    """Linear probe (the Sudoku recipe): ``LayerNorm -> Linear(d, 1)``."""

    def __init__(self, hidden_size: int, layer_norm_eps: float = 1e-5):
        super().__init__(hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.proj = nn.Linear(hidden_size, 1)
        self.reset_parameters()

    def forward(self, hidden_states, attention_mask=None):
        return self.proj(self.norm(hidden_states)).squeeze(-1)


@register_head("mlp")
class MLPQualityHead(QualityHead):
    """The LLaDA recipe: ``LayerNorm -> Linear(d, d) -> GELU -> Linear(d, 1)``."""

    def __init__(self, hidden_size: int, intermediate_size: Optional[int] = None, layer_norm_eps: float = 1e-5):
        super().__init__(hidden_size)
        inner = intermediate_size or hidden_size
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.fc1 = nn.Linear(hidden_size, inner)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(inner, 1)
        self.reset_parameters()

    def forward(self, hidden_states, attention_mask=None):
        return self.fc2(self.act(self.fc1(self.norm(hidden_states)))).squeeze(-1)


@register_head("transformer")
class TransformerQualityHead(QualityHead):
    pointwise = False
    """The text recipe: one extra bidirectional transformer block, then ``LayerNorm -> Linear(d, 1)``.

    Args:
        hidden_size (`int`): Width ``d`` of the backbone's hidden state.
        num_heads (`int`, *optional*): Attention heads; defaults to the largest of 16, 12, 8, 4, 2, 1
            that divides ``d``.
        mlp_ratio (`float`): Width of the block's feed-forward layer relative to ``d``.
        dropout (`float`): Dropout inside the block.
    """

    def __init__(self, hidden_size: int, num_heads: Optional[int] = None, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 layer_norm_eps: float = 1e-5):
        super().__init__(hidden_size)
        if num_heads is None:
            num_heads = next(h for h in (16, 12, 8, 4, 2, 1) if hidden_size % h == 0)
        if hidden_size % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide hidden_size={hidden_size}.")
        self.block = nn.TransformerEncoderLayer(
            d_model=hidden_size,
            nhead=num_heads,
            dim_feedforward=int(mlp_ratio * hidden_size),
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
            layer_norm_eps=layer_norm_eps,
        )
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.proj = nn.Linear(hidden_size, 1)
        self.reset_parameters()

    def forward(self, hidden_states, attention_mask=None):
        padding = None if attention_mask is None else ~attention_mask.bool()
        hidden = self.block(hidden_states, src_key_padding_mask=padding)
        return self.proj(self.norm(hidden)).squeeze(-1)
