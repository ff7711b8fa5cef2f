"""The one place where model families differ.

A masked diffusion backbone is any bidirectional model that maps token ids to per-position logits.
Families differ in a handful of ways, and every one of them is recorded here, keyed by the
backbone config's ``model_type``:

* how the backbone is loaded (which Auto class),
* where the mask token id comes from (config, tokenizer, or a family rule),
* whether logits are shifted by one (Dream and other AR-adapted models predict token ``i`` at ``i-1``),
* which module's output is the last hidden state (read by a forward hook, so the backbone never
  has to return the hidden states of every layer),
* how a 2D padding mask is passed to the backbone,
* whether prism_hf ships a native implementation of the architecture (``prism_hf.models``), used instead of the
  Hub's remote code.

Adding a family is one call to [`register_family`]; nothing else in the library branches on
``model_type``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

import torch

__all__ = [
    "BackboneFamily",
    "register_family",
    "get_family",
    "registered_families",
    "family_for_model",
    "resolve_mask_token_id",
    "hidden_size_of",
    "UnknownFamilyError",
]


class UnknownFamilyError(ValueError):
    """Raised when a backbone's ``model_type`` has no registry entry."""


def _attention_mask_2d(input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> Dict[str, Any]:
    """Pass a standard ``(B, L)`` padding mask (1 = attend), as BERT-style and LLaDA models expect."""
    return {} if attention_mask is None else {"attention_mask": attention_mask}


def _attention_mask_4d_with_positions(
    input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]
) -> Dict[str, Any]:
    """Dream convention: a pairwise ``(B, 1, L, L)`` boolean mask plus position ids that skip padding.

    Dream's own ``generate`` builds the same two tensors; with no padding we pass nothing, which Dream
    treats as full bidirectional attention.
    """
    if attention_mask is None:
        return {}
    keep = attention_mask.bool()
    pairwise = keep[:, None, :, None] & keep[:, None, None, :]
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return {"attention_mask": pairwise, "position_ids": position_ids}


def _no_attention_mask(input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> Dict[str, Any]:
    """For backbones whose forward has no attention mask (MDLM's DiT). Padding is attended to, so
    callers should avoid padding these models (unconditional text is packed to a fixed length)."""
    return {}


def _no_attention_mask_zero_timesteps(input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> Dict[str, Any]:
    """MDLM (kuleshov-group/mdlm-owt): ``forward(input_ids, timesteps, ...)`` has no attention mask and needs a
    ``timesteps`` tensor even though the public checkpoint ignores it (``time_conditioning=False``)."""
    return {"timesteps": torch.zeros(input_ids.shape[0], device=input_ids.device)}


ATTENTION_MASK_CONVENTIONS: Dict[str, Callable[[torch.Tensor, Optional[torch.Tensor]], Dict[str, Any]]] = {
    "2d": _attention_mask_2d,
    "4d_with_positions": _attention_mask_4d_with_positions,
    "none": _no_attention_mask,
    "none_zero_timesteps": _no_attention_mask_zero_timesteps,
}


@dataclass(frozen=True)
class BackboneFamily:
    """What PRISM needs to know about one family of masked diffusion backbones.

    Args:
        name (`str`): Family name used in configs, docs and error messages.
        model_types (`Tuple[str, ...]`): The backbone config ``model_type`` values this entry serves.
        auto_class (`str`): The `transformers` Auto class used to load the backbone from the Hub or a
            path, e.g. ``"AutoModelForMaskedLM"`` or ``"AutoModel"``.
        hidden_state_module (`str`, *optional*): Dotted path, relative to the backbone, of the module
            whose output (first element when it returns a tuple or `ModelOutput`) is the last hidden
            state, shape ``(B, L, d)``. ``None`` means the backbone's ``base_model``.
        logits_shift (`bool`): ``True`` when the backbone predicts token ``i`` at position ``i-1``
            (Dream). PRISM shifts logits and hidden states right by one so that position ``i`` always
            describes token ``i``.
        attention_mask_convention (`str`): One of ``"2d"``, ``"4d_with_positions"``, ``"none"``,
            ``"none_zero_timesteps"`` (MDLM: no mask, a zero ``timesteps`` tensor).
        mask_token_id_attr (`str`): Name of the config attribute that holds the mask id, if any.
        default_mask_token_id (`Callable`, *optional*): Family rule computing the mask id from the
            backbone config when neither the config attribute nor the tokenizer has one (MDLM: the
            last id of the vocabulary).
        logits_attr (`str`): Attribute of the backbone output holding the logits.
        extra_forward_kwargs (`dict`): Keyword arguments always passed to the backbone's forward.
        native_class (`str`, *optional*): Dotted path of prism_hf's own implementation of the architecture (e.g.
            ``"prism_hf.models.llada.LLaDAModelLM"``), registered with the Auto classes when ``prism_hf`` is
            imported. A family that has one loads its Hub checkpoints with it, never with the Hub's remote code,
            whatever ``trust_remote_code`` says; the remote code runs only on the explicit opt-out
            ``backbone_implementation="remote"``.

    Attention patterns other than full bidirectional attention (e.g. the block-causal attention of LLaDA2) are a
    property of the backbone's own forward; a family that needs a different mask layout from the caller adds an
    ``attention_mask_convention``.
    """

    name: str
    model_types: Tuple[str, ...]
    auto_class: str = "AutoModelForMaskedLM"
    hidden_state_module: Optional[str] = None
    logits_shift: bool = False
    attention_mask_convention: str = "2d"
    mask_token_id_attr: str = "mask_token_id"
    default_mask_token_id: Optional[Callable[[Any], Optional[int]]] = None
    logits_attr: str = "logits"
    extra_forward_kwargs: Dict[str, Any] = field(default_factory=dict)
    native_class: Optional[str] = None

    def __post_init__(self):
        if self.attention_mask_convention not in ATTENTION_MASK_CONVENTIONS:
            raise ValueError(
                f"attention_mask_convention={self.attention_mask_convention!r} is not valid; "
                f"choose one of {sorted(ATTENTION_MASK_CONVENTIONS)}."
            )
        if not self.model_types:
            raise ValueError(f"Family {self.name!r} needs at least one model_type.")

    def backbone_inputs(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> Dict[str, Any]:
        """Keyword arguments for the backbone's forward, in this family's conventions."""
        kwargs = {"input_ids": input_ids}
        kwargs.update(ATTENTION_MASK_CONVENTIONS[self.attention_mask_convention](input_ids, attention_mask))
        kwargs.update(self.extra_forward_kwargs)
        return kwargs

    def window_inputs(
        self, input_ids: torch.Tensor, key_padding_mask: Optional[torch.Tensor], cache: Any
    ) -> Dict[str, Any]:
        """Keyword arguments for a window forward against a block-decoding cache
        ([`~prism_hf.models.cache.BlockKVCache`] with a window set): the window's tokens, their positions in the
        sequence, and the padding mask of the whole cached sequence (the same layout for every family)."""
        positions = cache.window
        if key_padding_mask is not None and self.attention_mask_convention == "4d_with_positions":
            # This convention's full forwards number positions past the padding: the window must do the same.
            positions = (key_padding_mask.long().cumsum(-1) - 1).clamp(min=0).gather(1, cache.window)
        kwargs = {"input_ids": input_ids, "position_ids": positions, "cache": cache}
        if key_padding_mask is not None:
            kwargs["attention_mask"] = key_padding_mask
        kwargs.update(self.extra_forward_kwargs)
        return kwargs

    def window_for(self, positions: torch.Tensor, seq_len: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The positions a window forward must compute so that its outputs describe the tokens at ``positions``.

        A shifted family predicts token ``i`` at position ``i - 1``, so its window starts one position earlier.

        Args:
            positions (`torch.LongTensor` of shape `(batch_size, W)`): Consecutive positions per row (the tokens to
                decide).
            seq_len (`int`): Length of the whole sequence.

        Returns:
            ``(window, index)``: the positions to run, `(batch_size, W')`, and for each of ``positions`` the index into
            the window's outputs that describes it, `(batch_size, W)` (position 0 of a shifted family reuses its own
            output, as [`align`] does).
        """
        shift = int(self.logits_shift)
        width = positions.shape[1]
        window_len = min(width + shift, seq_len)
        start = (positions[:, :1] - shift).clamp(min=0, max=seq_len - window_len)
        window = start + torch.arange(window_len, device=positions.device)
        index = (positions - shift - start).clamp(min=0)
        return window, index

    def align(self, tensor: torch.Tensor) -> torch.Tensor:
        """Undo a one-position logit shift so that index ``i`` describes token ``i``.

        For a shifted family the output at ``i-1`` predicts token ``i``; position 0 has no
        predecessor and reuses its own output (the convention of Dream's sampler).
        """
        if not self.logits_shift:
            return tensor
        return torch.cat([tensor[:, :1], tensor[:, :-1]], dim=1)


_REGISTRY: Dict[str, BackboneFamily] = {}


def register_family(family: BackboneFamily, *, overwrite: bool = False) -> BackboneFamily:
    """Register a backbone family for every ``model_type`` it lists.

    Example:
        ```python
        from prism_hf import BackboneFamily, register_family

        register_family(BackboneFamily(name="my-mdm", model_types=("my_mdm",), auto_class="AutoModel",
                                       hidden_state_module="model.norm"))
        ```
    """
    for model_type in family.model_types:
        if model_type in _REGISTRY and not overwrite and _REGISTRY[model_type] != family:
            raise ValueError(
                f"model_type {model_type!r} is already registered to family {_REGISTRY[model_type].name!r}; "
                "pass overwrite=True to replace it."
            )
        _REGISTRY[model_type] = family
    return family


def registered_families() -> Dict[str, BackboneFamily]:
    """A copy of the registry: ``model_type`` -> family."""
    return dict(_REGISTRY)


def get_family(model_type: str) -> BackboneFamily:
    """Look up the family for a backbone ``model_type``, with an error that says how to add one."""
    try:
        return _REGISTRY[model_type]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownFamilyError(
            f"No PRISM backbone family is registered for model_type={model_type!r}. Registered model types: "
            f"{known}. Register yours with `prism_hf.register_family(BackboneFamily(name=..., "
            f"model_types=({model_type!r},), auto_class=..., hidden_state_module=...))`; see CONTRIBUTING.md, "
            "'Adding a model family'."
        ) from None


def family_for_model(model: torch.nn.Module) -> BackboneFamily:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        raise UnknownFamilyError(
            f"backbone of type {type(model).__name__} has no `config.model_type`; PRISM needs a transformers-style "
            "model whose config names its model_type."
        )
    return get_family(model_type)


def hidden_size_of(config: Any) -> int:
    """Width of the backbone's last hidden state, from the usual config attribute names."""
    for attr in ("hidden_size", "d_model", "hidden_dim", "n_embd", "dim"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError(
        f"Cannot find the hidden size in the backbone config of type {type(config).__name__}; expected one of "
        "hidden_size, d_model, hidden_dim, n_embd, dim. Pass `hidden_size=` to `from_backbone`."
    )


def vocab_size_of(config: Any) -> Optional[int]:
    for attr in ("vocab_size", "embedding_size", "padded_vocab_size"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def resolve_mask_token_id(
    family: BackboneFamily, config: Any, tokenizer: Any = None, mask_token_id: Optional[int] = None
) -> int:
    """Find the mask token id: explicit argument, then the backbone config, then the tokenizer, then
    the family rule. Raises a `ValueError` that lists where it looked when none has it."""
    source = "argument mask_token_id"
    if mask_token_id is None:
        mask_token_id = getattr(config, family.mask_token_id_attr, None)
        source = f"backbone config `{family.mask_token_id_attr}`"
    if mask_token_id is None and tokenizer is not None:
        mask_token_id = getattr(tokenizer, "mask_token_id", None)
        source = "tokenizer `mask_token_id`"
    if mask_token_id is None and family.default_mask_token_id is not None:
        mask_token_id = family.default_mask_token_id(config)
        source = f"family {family.name!r} rule"
    if mask_token_id is None:
        raise ValueError(
            f"mask_token_id=None: no mask token is known for this {family.name!r} backbone. It was not given, the "
            f"backbone config has no `{family.mask_token_id_attr}`, and no tokenizer with a mask token was passed. "
            "Pass `mask_token_id=<id>` (an id inside the vocabulary) or `tokenizer=`."
        )
    if not isinstance(mask_token_id, int) or isinstance(mask_token_id, bool):
        raise ValueError(f"mask_token_id={mask_token_id!r} (from {source}) must be an int.")
    vocab = vocab_size_of(config)
    if mask_token_id < 0 or (vocab is not None and mask_token_id >= vocab):
        raise ValueError(
            f"mask_token_id={mask_token_id} (from {source}) is outside the vocabulary: valid ids are 0..{vocab - 1 if vocab else '?'}."
        )
    return mask_token_id


def _last_vocab_id(config: Any) -> Optional[int]:
    vocab = vocab_size_of(config)
    return None if vocab is None else vocab - 1


# --- Built-in families -------------------------------------------------------------------------------
# Generic masked LMs: their tokenizer (or config) names the mask token; the base model's output is the
# last hidden state; standard 2D padding mask.
register_family(
    BackboneFamily(
        name="masked-lm",
        model_types=("bert", "roberta", "xlm-roberta", "distilbert", "modernbert", "deberta-v2", "electra"),
        auto_class="AutoModelForMaskedLM",
    )
)
# LLaDA (GSAI-ML/LLaDA-8B-*, LLaDA-1.5): config carries mask_token_id; `model.transformer.ln_f` is the final norm,
# whose output feeds the LM head. Loaded with the native port prism_hf.models.llada (the Hub's remote code does not
# run under transformers 5).
register_family(
    BackboneFamily(
        name="llada",
        model_types=("llada",),
        auto_class="AutoModel",
        hidden_state_module="model.transformer.ln_f",
        native_class="prism_hf.models.llada.LLaDAModelLM",
    )
)
# Dream (Dream-org/Dream-v0-*-7B): AR-adapted, logits shifted by one; pairwise 4D mask plus position ids. Loaded with
# the native port prism_hf.models.dream.
register_family(
    BackboneFamily(
        name="dream",
        model_types=("Dream", "dream"),
        auto_class="AutoModel",
        hidden_state_module="model.norm",
        logits_shift=True,
        attention_mask_convention="4d_with_positions",
        native_class="prism_hf.models.dream.DreamModel",
    )
)
# MDLM (kuleshov-group/mdlm-owt; native port prism_hf.models.mdlm): DiT backbone without a padding mask whose forward needs a
# `timesteps` tensor and returns a bare tensor unless return_dict=True; the mask token is the last
# vocabulary id (the GPT-2 tokenizer has none); the final layer's norm output is the last hidden state.
register_family(
    BackboneFamily(
        name="mdlm",
        model_types=("mdlm",),
        auto_class="AutoModelForMaskedLM",
        hidden_state_module="backbone.output_layer.norm_final",
        attention_mask_convention="none_zero_timesteps",
        default_mask_token_id=_last_vocab_id,
        extra_forward_kwargs={"return_dict": True},
        native_class="prism_hf.models.mdlm.MDLMForMaskedLM",
    )
)


def replace_family(name: str, **changes: Any) -> BackboneFamily:
    """Re-register a built-in family with some fields changed (e.g. a different hidden-state module)."""
    family = next((f for f in _REGISTRY.values() if f.name == name), None)
    if family is None:
        raise UnknownFamilyError(f"No family named {name!r}; registered: {sorted({f.name for f in _REGISTRY.values()})}.")
    return register_family(dataclasses.replace(family, **changes), overwrite=True)
