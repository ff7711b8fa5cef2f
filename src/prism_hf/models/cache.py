"""A key/value cache for block (semi-autoregressive) decoding with bidirectional diffusion language models.

An autoregressive cache grows by appending: a token's keys never change because it never sees later tokens. In a
bidirectional masked diffusion model every position attends to every other, so no key is final until the whole
sequence is. Fast-dLLM's observation is that, during block decoding, the keys and values of positions *outside* the
block being decoded change little from one step to the next, so they can be computed once per block and reused while
only the active block (and, for the "prefix" mode, the masked suffix) is recomputed at every step.

[`BlockKVCache`] implements that for the native LLaDA and Dream ports:

* **fill**: a forward over the whole sequence (``cache=cache`` with no window set) stores every layer's keys
  and values, after the rotary embedding, for every position;
* **window**: after ``cache.set_window(positions)``, the model is called on the tokens at ``positions`` only (shape
  `(batch_size, window_length)`, any positions per row, e.g. the active block of each row of a padded batch). Each
  layer computes fresh keys and values for the window, and attends over the cached keys and values of the whole
  sequence with the window's positions replaced by the fresh ones. Nothing is written back: the cache keeps what the
  fill computed until the next fill.

Exactness: a window forward equals the uncached forward of the same sequence when nothing has changed since the fill.
Once tokens change (inside the window, as decoding proceeds), the cached keys of the other positions still reflect the
old tokens at every layer but the first, so the result is an approximation; it is exact for the first layer, and a
one-layer model is exact throughout.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch

__all__ = ["BlockKVCache", "pop_cache_argument"]


class BlockKVCache:
    """Keys and values of every layer for a whole sequence, filled once, read by window forwards.

    Pass it as ``cache`` (transformers 5's name; ``past_key_values`` is accepted too) to a model that supports it
    (``LLaDAModelLM``, ``DreamModel``; their ``supports_block_kv_cache`` is `True`). ``use_cache=True`` without a cache
    creates and fills one and returns it as ``output.cache``.

    Example:
        ```python
        cache = BlockKVCache()
        full = model(input_ids, cache=cache)                        # fill: (B, L) tokens
        cache.set_window(block_positions)                           # (B, W) positions into the sequence
        block = model(input_ids.gather(1, block_positions), cache=cache)  # (B, W) logits
        ```
    """

    def __init__(self):
        self.keys: List[torch.Tensor] = []
        self.values: List[torch.Tensor] = []
        self.window: Optional[torch.Tensor] = None

    @property
    def is_filled(self) -> bool:
        """Whether a fill forward has stored keys and values."""
        return bool(self.keys)

    @property
    def seq_length(self) -> int:
        """Length of the cached sequence (0 before the first fill)."""
        return self.keys[0].shape[-2] if self.keys else 0

    def reset(self) -> "BlockKVCache":
        """Forget everything: the next forward with this cache is a fill."""
        self.keys, self.values, self.window = [], [], None
        return self

    def set_window(self, positions: Optional[torch.Tensor]) -> "BlockKVCache":
        """Set the positions the next forwards compute (``None``: the next forward is a fill).

        Args:
            positions (`torch.LongTensor` of shape `(batch_size, window_length)`, *optional*): Positions into the cached
                sequence, one row per batch row, each in ``[0, seq_length)`` and distinct within a row.
        """
        if positions is None:
            self.keys, self.values, self.window = [], [], None
            return self
        if not self.is_filled:
            raise ValueError("BlockKVCache.set_window: the cache is empty; run a fill forward over the whole sequence first.")
        if not torch.is_tensor(positions) or positions.dim() != 2 or positions.dtype.is_floating_point:
            raise ValueError(
                f"positions must be an integer tensor of shape (batch_size, window_length); got "
                f"{tuple(positions.shape) if torch.is_tensor(positions) else type(positions).__name__}."
            )
        batch = self.keys[0].shape[0]
        if positions.shape[0] != batch:
            raise ValueError(f"positions has {positions.shape[0]} rows; the cache holds {batch}.")
        if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= self.seq_length):
            raise ValueError(f"positions must lie in [0, {self.seq_length}) (the cached sequence length).")
        self.window = positions.to(self.keys[0].device).long()
        return self

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Called by each attention layer with its fresh (rotated) keys and values; returns those to attend over.

        Args:
            key, value (`torch.Tensor` of shape `(batch_size, num_key_value_heads, length, head_dim)`): For the whole
                sequence in a fill, for the window otherwise.
            layer_idx (`int`): The layer's index.

        Returns:
            `(key, value)` of shape `(batch_size, num_key_value_heads, seq_length, head_dim)`.
        """
        if self.window is None:
            if layer_idx == len(self.keys):
                self.keys.append(key.detach())
                self.values.append(value.detach())
            elif layer_idx < len(self.keys):
                self.keys[layer_idx], self.values[layer_idx] = key.detach(), value.detach()
            else:
                raise ValueError(f"BlockKVCache.update: layer {layer_idx} arrived before layer {len(self.keys)}.")
            return key, value
        if key.shape[-2] != self.window.shape[1]:
            raise ValueError(
                f"A window forward got {key.shape[-2]} positions but the window holds {self.window.shape[1]}; call the "
                "model on exactly the tokens at the window's positions."
            )
        index = self.window[:, None, :, None].expand(-1, key.shape[1], -1, key.shape[-1])
        full_key = self.keys[layer_idx].to(key.dtype).scatter(2, index, key)
        full_value = self.values[layer_idx].to(value.dtype).scatter(2, index, value)
        return full_key, full_value

    def window_attention_mask(
        self, key_padding_mask: Optional[torch.Tensor], implementation: str, dtype: torch.dtype
    ) -> Optional[torch.Tensor]:
        """The mask of a window forward, in the format of the attention implementation.

        Args:
            key_padding_mask (`torch.Tensor` of shape `(batch_size, seq_length)`, *optional*): 1 for real tokens, 0 for
                padding, over the whole cached sequence. `None` (or all ones): nothing is masked.
            implementation (`str`): ``config._attn_implementation``.
            dtype (`torch.dtype`): Dtype of the attention scores (for additive masks).

        Returns:
            `None`, or a `(batch_size, 1, window_length, seq_length)` mask: boolean (True = attend) for ``"sdpa"``,
            additive otherwise.
        """
        if key_padding_mask is None:
            return None
        if key_padding_mask.shape != (self.window.shape[0], self.seq_length):
            raise ValueError(
                f"attention_mask has shape {tuple(key_padding_mask.shape)}; in a window forward it is the padding mask of "
                f"the whole cached sequence, ({self.window.shape[0]}, {self.seq_length})."
            )
        keep = key_padding_mask.bool()
        if bool(keep.all()):
            return None
        if "flash" in (implementation or ""):
            raise ValueError(
                f"attn_implementation={implementation!r} cannot attend from a window to a padded cached sequence; use "
                "'sdpa' or 'eager' for padded batches with a key/value cache."
            )
        mask = keep[:, None, None, :].expand(-1, 1, self.window.shape[1], -1)
        if implementation == "sdpa":
            return mask
        zero = torch.zeros((), dtype=dtype, device=mask.device)
        return torch.where(mask, zero, torch.finfo(dtype).min)


def pop_cache_argument(cache: Optional["BlockKVCache"], kwargs: dict) -> Optional["BlockKVCache"]:
    """Accept ``past_key_values`` (the transformers 4 name, and Fast-dLLM's) as an alias of ``cache``."""
    if "past_key_values" in kwargs:
        alias = kwargs.pop("past_key_values")
        if cache is not None and alias is not None:
            raise ValueError("Pass the cache as cache= or as past_key_values=, not both.")
        cache = alias if cache is None else cache
    if cache is not None and not isinstance(cache, BlockKVCache):
        raise ValueError(
            f"cache must be a prism_hf.models.cache.BlockKVCache; got {type(cache).__name__} (the model is bidirectional: "
            "an autoregressive cache does not apply)."
        )
    return cache
