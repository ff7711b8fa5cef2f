"""Batching for masked diffusion training: padding, attention mask, and which positions may be masked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
from transformers.utils import logging

logger = logging.get_logger(__name__)

__all__ = ["MaskedDiffusionCollator", "IGNORE_INDEX"]

#: Label value marking a position that is not a training target (the Hugging Face convention).
IGNORE_INDEX = -100


def _as_list(value: Any, field: str, index: int) -> List[int]:
    if isinstance(value, torch.Tensor):
        if value.dim() != 1:
            raise ValueError(f"Example {index}: `{field}` must be 1-D (one sequence); got shape {tuple(value.shape)}.")
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ValueError(f"Example {index}: `{field}` must be a list or 1-D tensor of ints; got {type(value).__name__}.")


@dataclass
class MaskedDiffusionCollator:
    """Pad a list of examples and mark the positions the forward process may mask.

    Each example is a mapping (a `datasets` row, a dict) with:

    - ``input_ids`` (required): the token ids of the whole sequence (prompt + response for conditional data).
    - ``prompt_length`` (*optional*, `int`): number of leading prompt tokens. They are never masked (the LLaDA
      SFT recipe) but stay visible to the model.
    - ``labels`` (*optional*): same length as ``input_ids``; positions whose label is ``-100`` (the Hugging Face
      convention for prompt tokens) are never masked. The labels themselves are not returned: the clean
      ``input_ids`` are the targets.
    - ``maskable`` (*optional*): an explicit 0/1 flag per position.
    - ``attention_mask`` (*optional*): 0 marks padding already present in the example.

    Without any of the optional fields an example is unconditional: every real token may be masked. When
    several are given, a position is maskable only if all of them allow it. Padding is never maskable.

    Returns a dict with ``input_ids`` (`torch.LongTensor`, `(B, L)`, right-padded with ``pad_token_id``),
    ``attention_mask`` (`torch.LongTensor`, `(B, L)`, 1 for real tokens), ``maskable`` (`torch.BoolTensor`,
    `(B, L)`) and ``has_maskable`` (`bool`: ``False`` when no position of the batch may be masked; the trainers
    skip such a batch with a warning instead of computing a meaningless loss; see ``return_has_maskable``).

    Args:
        pad_token_id (`int`): Id used for padding.
        max_length (`int`, *optional*): Longest allowed sequence. Longer examples raise a `ValueError` unless
            ``truncation=True``. The trainers set it to the model's maximum length when they build the collator.
        truncation (`bool`): Cut examples longer than ``max_length`` instead of raising.
        pad_to_multiple_of (`int`, *optional*): Round the padded length up to a multiple of this.
        mask_padding (`bool`): LLaDA's SFT convention: padding tokens (``pad_token_id`` should then be the EOS
            token) are attended to and may be masked, so the model learns where the answer ends.
        return_has_maskable (`bool`): Include the ``has_maskable`` flag. The trainers turn it off for iterable
            (streaming) datasets, whose batches `accelerate` concatenates across processes, which only works
            for tensors; such a batch with nothing to mask then trains with an exactly zero loss.
        never_mask_first (`bool`): Position 0 is never maskable. Needed for backbones whose logits are shifted by
            one (Dream; the family registry's ``logits_shift``): their output at ``i - 1`` predicts token ``i``, so
            position 0 has no output of its own and reuses the one that predicts token 1; masking it would train that
            one output to predict two tokens. [`for_model`] sets it from the registry.
    """

    pad_token_id: int
    max_length: Optional[int] = None
    truncation: bool = False
    pad_to_multiple_of: Optional[int] = None
    mask_padding: bool = False
    return_has_maskable: bool = True
    never_mask_first: bool = False

    @classmethod
    def for_model(cls, model: Any, pad_token_id: int, **kwargs: Any) -> "MaskedDiffusionCollator":
        """A collator with the settings the model's backbone family needs (``never_mask_first`` for a family with
        shifted logits, read from the family registry), and ``kwargs`` for the rest.

        Args:
            model: A [`PrismForMaskedDiffusion`], a registered backbone (possibly wrapped by peft), or any model
                (an unregistered model gets the defaults).
            pad_token_id (`int`): Id used for padding.
            kwargs: Other fields (``max_length``, ``truncation``, ...).
        """
        from ..modeling.families import UnknownFamilyError, family_for_model

        try:
            family = family_for_model(model)
        except UnknownFamilyError:
            family = None
        kwargs.setdefault("never_mask_first", bool(getattr(family, "logits_shift", False)))
        return cls(pad_token_id=pad_token_id, **kwargs)

    def __post_init__(self):
        if isinstance(self.pad_token_id, bool) or not isinstance(self.pad_token_id, int) or self.pad_token_id < 0:
            raise ValueError(f"pad_token_id={self.pad_token_id!r} is not valid; pass the tokenizer's pad id (an int >= 0).")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 1):
            raise ValueError(f"max_length={self.max_length!r} is not valid; use None or an integer >= 1.")
        if self.pad_to_multiple_of is not None and (not isinstance(self.pad_to_multiple_of, int) or self.pad_to_multiple_of < 1):
            raise ValueError(f"pad_to_multiple_of={self.pad_to_multiple_of!r} is not valid; use None or an integer >= 1.")

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
        if len(examples) == 0:
            raise ValueError("MaskedDiffusionCollator got an empty list of examples.")
        rows: List[List[int]] = []
        flags: List[List[bool]] = []
        for index, example in enumerate(examples):
            if not isinstance(example, Mapping) or "input_ids" not in example:
                keys = sorted(example) if isinstance(example, Mapping) else type(example).__name__
                raise ValueError(
                    f"Example {index} has no `input_ids` (got {keys}). Tokenize the dataset first, e.g. "
                    "dataset.map(lambda row: tokenizer(row['text']), batched=True), so that each row has `input_ids`."
                )
            ids = _as_list(example["input_ids"], "input_ids", index)
            if len(ids) == 0:
                raise ValueError(f"Example {index} has empty `input_ids`.")
            allowed = [True] * len(ids)
            if example.get("attention_mask") is not None:
                attn = _as_list(example["attention_mask"], "attention_mask", index)
                self._check_length("attention_mask", attn, ids, index)
                allowed = [a and bool(m) for a, m in zip(allowed, attn)]
            if example.get("labels") is not None:
                labels = _as_list(example["labels"], "labels", index)
                self._check_length("labels", labels, ids, index)
                allowed = [a and lab != IGNORE_INDEX for a, lab in zip(allowed, labels)]
            if example.get("maskable") is not None:
                explicit = _as_list(example["maskable"], "maskable", index)
                self._check_length("maskable", explicit, ids, index)
                allowed = [a and bool(m) for a, m in zip(allowed, explicit)]
            if example.get("prompt_length") is not None:
                prompt_length = int(example["prompt_length"])
                if not 0 <= prompt_length <= len(ids):
                    raise ValueError(
                        f"Example {index}: prompt_length={prompt_length} is not valid for a sequence of {len(ids)} tokens; "
                        f"it must be between 0 and {len(ids)}."
                    )
                allowed = [False] * prompt_length + allowed[prompt_length:]
            if self.max_length is not None and len(ids) > self.max_length:
                if not self.truncation:
                    raise ValueError(
                        f"Example {index} has {len(ids)} tokens, more than max_length={self.max_length} (the model's maximum "
                        "sequence length). Filter or truncate the dataset, or pass truncation=True to the collator."
                    )
                ids, allowed = ids[: self.max_length], allowed[: self.max_length]
            rows.append(ids)
            flags.append(allowed)

        length = max(len(r) for r in rows)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch_size = len(rows)
        input_ids = torch.full((batch_size, length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, length), dtype=torch.long)
        maskable = torch.zeros((batch_size, length), dtype=torch.bool)
        for b, (ids, allowed) in enumerate(zip(rows, flags)):
            input_ids[b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[b, : len(ids)] = 1
            maskable[b, : len(ids)] = torch.tensor(allowed, dtype=torch.bool)
        if self.mask_padding:
            padding = attention_mask == 0
            maskable |= padding
            attention_mask = torch.ones_like(attention_mask)
        if self.never_mask_first:
            maskable[:, 0] = False
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "maskable": maskable}
        has_maskable = bool(maskable.any())
        if not has_maskable:
            logger.warning(
                "MaskedDiffusionCollator: no position of this batch of %d examples may be masked (all prompt or "
                "padding); the trainer skips it.", batch_size,
            )
        if self.return_has_maskable:
            batch["has_maskable"] = has_maskable
        return batch

    @staticmethod
    def _check_length(field: str, values: List[Any], ids: List[int], index: int) -> None:
        if len(values) != len(ids):
            raise ValueError(f"Example {index}: `{field}` has {len(values)} entries but `input_ids` has {len(ids)}.")
