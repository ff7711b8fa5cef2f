"""Quality heads: small modules mapping the backbone's last hidden state to one logit per position.

A head type is one class registered under a name; ``PrismConfig.head_type`` selects it and
``PrismConfig.head_kwargs`` are passed to its constructor.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Type

import torch
from torch import nn

__all__ = [
    "QualityHead",
    "LinearQualityHead",
    "MLPQualityHead",
    "TransformerQualityHead",
    "register_head",
    "get_head_class",
    "HEAD_REGISTRY",
]

HEAD_REGISTRY: Dict[str, Type["QualityHead"]] = {}


def register_head(name: str) -> Callable[[Type["QualityHead"]], Type["QualityHead"]]:
    """Class decorator: make a head type available as ``head_type=name``."""

    def decorator(cls: Type["QualityHead"]) -> Type["QualityHead"]:
        if name in HEAD_REGISTRY and HEAD_REGISTRY[name] is not cls:
            raise ValueError(f"head type {name!r} is already registered to {HEAD_REGISTRY[name].__name__}.")
        HEAD_REGISTRY[name] = cls
        cls.head_type = name
        return cls

    return decorator


def get_head_class(name: str) -> Type["QualityHead"]:
    try:
        return HEAD_REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"head_type={name!r} is not a known quality head; valid head types: {sorted(HEAD_REGISTRY)}. "
            "Add one with `@prism_hf.modeling.heads.register_head('name')` on a `QualityHead` subclass."
        ) from None


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
