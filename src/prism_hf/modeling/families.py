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
import numbers
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from ..utils.registry import Registry

__all__ = [
    "BackboneFamily",
    "FAMILY_REGISTRY",
    "register_family",
    "get_family",
    "registered_families",
    "family_for_model",
    "mask_token_id_for",
    "resolve_mask_token_id",
    "aligned_logits",
    "max_length_of",
    "hidden_size_of",
    "vocab_size_of",
    "enable_gradient_checkpointing",
    "MAX_LENGTH_ATTRS",
    "MaskTokenNotFoundError",
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

    def forward_inputs(
        self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], cache: Any = None
    ) -> Dict[str, Any]:
        """Keyword arguments of one backbone forward: [`backbone_inputs`] (plus the ``cache`` to fill, if any), or
        [`window_inputs`] when ``cache`` has a window set."""
        if cache is not None and getattr(cache, "window", None) is not None:
            return self.window_inputs(input_ids, attention_mask, cache)
        inputs = self.backbone_inputs(input_ids, attention_mask)
        if cache is not None:
            inputs["cache"] = cache
        return inputs

    def logits_of(self, output: Any, align: bool = True) -> torch.Tensor:
        """The logits in a backbone's output (its ``logits_attr``, else its first element, or the output itself when
        it is a bare tensor), re-aligned with [`align`] unless ``align=False`` (a window forward)."""
        logits = output if isinstance(output, torch.Tensor) else getattr(output, self.logits_attr, None)
        if logits is None:
            logits = output[0]
        return self.align(logits) if align else logits

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


#: ``model_type`` -> [`BackboneFamily`]. Read-only: add a family with [`register_family`].
FAMILY_REGISTRY: Registry = Registry(
    "backbone family", "model_type", error_cls=UnknownFamilyError,
    how_to_add="Register yours with `prism_hf.register_family(BackboneFamily(...))`.",
)
_REGISTRY = FAMILY_REGISTRY  # the previous release's name


def register_family(family: BackboneFamily, *, overwrite: bool = False) -> BackboneFamily:
    """Register a backbone family for every ``model_type`` it lists (all or none: a ``model_type`` taken by another
    family raises before anything is registered, unless ``overwrite=True``).

    Example:
        ```python
        from prism_hf import BackboneFamily, register_family

        register_family(BackboneFamily(name="my-mdm", model_types=("my_mdm",), auto_class="AutoModel",
                                       hidden_state_module="model.norm"))
        ```
    """
    for model_type in family.model_types:
        current = FAMILY_REGISTRY.get(model_type)
        if current is not None and current != family and not overwrite:
            raise ValueError(
                f"model_type {model_type!r} is already registered to family {current.name!r}; "
                "pass overwrite=True to replace it."
            )
    for model_type in family.model_types:
        FAMILY_REGISTRY.register(model_type, family, overwrite=True)
    return family


def registered_families() -> Dict[str, BackboneFamily]:
    """A copy of the registry: ``model_type`` -> family."""
    return FAMILY_REGISTRY.snapshot()


def get_family(model_type: str) -> BackboneFamily:
    """Look up the family for a backbone ``model_type``, with an error that says how to add one."""
    if isinstance(model_type, str) and model_type in FAMILY_REGISTRY:
        return FAMILY_REGISTRY[model_type]
    raise UnknownFamilyError(
        f"No PRISM backbone family is registered for model_type={model_type!r}. Registered model types: "
        f"{', '.join(sorted(FAMILY_REGISTRY))}. Register yours with `prism_hf.register_family(BackboneFamily(name=..., "
        f"model_types=({model_type!r},), auto_class=..., hidden_state_module=...))`; see CONTRIBUTING.md, "
        "'Adding a model family'."
    )


def family_for_model(model: torch.nn.Module) -> BackboneFamily:
    """The family of a backbone model (or of a [`PrismForMaskedDiffusion`], a PEFT or DDP wrapper of either).

    Raises:
        [`UnknownFamilyError`]: the model has no ``config.model_type``, or it is not registered.
    """
    model = _unwrap(model)
    family = getattr(model, "family", None)
    if isinstance(family, BackboneFamily):
        return family
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        raise UnknownFamilyError(
            f"backbone of type {type(model).__name__} has no `config.model_type`; PRISM needs a transformers-style "
            "model whose config names its model_type."
        )
    return get_family(model_type)


# ----- reading backbone facts off a model or a config ----------------------------------------------------
#: Config attributes that hold a model's longest sequence, in the order they are tried.
MAX_LENGTH_ATTRS = ("max_position_embeddings", "max_sequence_length", "model_length", "n_positions", "max_seq_len",
                    "n_ctx", "seq_length")
#: Config attributes that hold the width of the last hidden state, in the order they are tried.
HIDDEN_SIZE_ATTRS = ("hidden_size", "d_model", "hidden_dim", "n_embd", "dim")
#: Config attributes that hold the vocabulary size, in the order they are tried.
VOCAB_SIZE_ATTRS = ("vocab_size", "embedding_size", "padded_vocab_size")


class MaskTokenNotFoundError(ValueError):
    """Raised by [`mask_token_id_for`] when no source knows the mask token id (a `ValueError`)."""


def _unwrap(model: Any) -> Any:
    """The model inside distributed and compile wrappers (``.module`` of DDP / DeepSpeed, ``._orig_mod`` of
    `torch.compile`); a PEFT wrapper is kept (it forwards ``config`` and the call to the model it wraps)."""
    for _ in range(8):
        inner = getattr(model, "_orig_mod", None)
        if inner is None and isinstance(model, torch.nn.Module) and isinstance(getattr(model, "module", None), torch.nn.Module):
            inner = model.module
        if inner is None:
            return model
        model = inner
    return model


def _is_prism(model: Any) -> bool:
    from .modeling_prism import PrismForMaskedDiffusion

    return isinstance(model, PrismForMaskedDiffusion)


def _as_config(value: Any) -> Any:
    """A config object (a stored ``backbone_config`` dict becomes a namespace, so that ``getattr`` reads it)."""
    if isinstance(value, dict):
        return SimpleNamespace(**value)
    return value


def _configs_of(model_or_config: Any) -> List[Any]:
    """The configs to read, in order: a PRISM model's (or `PrismConfig`'s) own first, then its backbone's, each
    followed by its nested ``text_config`` (multimodal configs keep the language model's fields there)."""
    item = _unwrap(model_or_config)
    configs: List[Any] = []
    if isinstance(item, torch.nn.Module):
        configs.append(getattr(item, "config", None))
        if _is_prism(item):
            configs.append(item._raw_backbone().config)
    else:
        configs.append(_as_config(item))
    if getattr(configs[0], "model_type", None) == "prism" and not isinstance(item, torch.nn.Module):
        configs.append(_as_config(getattr(configs[0], "backbone_config", None)))
    found: List[Any] = []
    for config in configs:
        if config is None:
            continue
        found.append(config)
        nested = _as_config(getattr(config, "text_config", None))
        if nested is not None:
            found.append(nested)
    return found


def _first_positive_int(configs: List[Any], attrs: Tuple[str, ...]) -> Optional[int]:
    for config in configs:
        for attr in attrs:
            value = getattr(config, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _family_of(model_or_config: Any) -> Optional[BackboneFamily]:
    """The registered family of a model or config, or `None` for one outside the registry."""
    item = _unwrap(model_or_config)
    if isinstance(item, torch.nn.Module):
        try:
            return family_for_model(item)
        except UnknownFamilyError:
            return None
    config = _as_config(item)
    model_type = getattr(config, "backbone_family", None) if getattr(config, "model_type", None) == "prism" else None
    model_type = model_type or getattr(config, "model_type", None)
    return FAMILY_REGISTRY.get(model_type) if isinstance(model_type, str) else None


def hidden_size_of(config: Any) -> int:
    """Width of the backbone's last hidden state, from the usual config attribute names.

    Args:
        config: A backbone config (read with its nested ``text_config``), a [`PrismConfig`] or a model.

    Returns:
        `int`: the first of ``hidden_size``, ``d_model``, ``hidden_dim``, ``n_embd``, ``dim`` that is a positive int.
    """
    value = _first_positive_int(_configs_of(config), HIDDEN_SIZE_ATTRS)
    if value is None:
        raise ValueError(
            f"Cannot find the hidden size in the backbone config of type {type(config).__name__}; expected one of "
            "hidden_size, d_model, hidden_dim, n_embd, dim. Pass `hidden_size=` to `from_backbone`."
        )
    return value


def vocab_size_of(config: Any) -> Optional[int]:
    """Size of the output vocabulary (``vocab_size``, ``embedding_size`` or ``padded_vocab_size``) of a config or a
    model; `None` when the config does not say."""
    return _first_positive_int(_configs_of(config), VOCAB_SIZE_ATTRS)


def max_length_of(config_or_model: Any) -> Optional[int]:
    """Longest sequence a model accepts, from its config (a PRISM model's backbone config included).

    Args:
        config_or_model: A model (a [`PrismForMaskedDiffusion`], a backbone, a PEFT or DDP wrapper of either) or a
            config ([`PrismConfig`] included).

    Returns:
        `int` or `None`: the first positive int among ``MAX_LENGTH_ATTRS`` (``max_position_embeddings``,
        ``max_sequence_length``, ``model_length``, ``n_positions``, ``max_seq_len``, ``n_ctx``, ``seq_length``);
        `None` when the config names none.
    """
    return _first_positive_int(_configs_of(config_or_model), MAX_LENGTH_ATTRS)


def mask_token_id_for(model_or_config: Any, tokenizer: Any = None, mask_token_id: Optional[int] = None) -> int:
    """The mask token id of a model, the one answer for the model, the trainers, the pipeline and the examples.

    Precedence: the explicit ``mask_token_id``, then what the model or config records (a PRISM model's
    ``config.mask_token_id``, a backbone config's family attribute, e.g. ``mask_token_id``), then the tokenizer's
    ``mask_token_id``, then the family's default rule (MDLM: the last vocabulary id; the GPT-2 tokenizer has no mask
    token). This is 0.1.0's order of ``resolve_mask_token_id`` and ``from_backbone``. The result is checked against
    the vocabulary.

    Args:
        model_or_config: A [`PrismForMaskedDiffusion`], a raw backbone (LLaDA, Dream, MDLM, BERT, any model with a
            ``config``; PEFT and DDP wrappers too), or a config ([`PrismConfig`] or a backbone config).
        tokenizer (*optional*): Its ``mask_token_id`` is used when the model records none.
        mask_token_id (`int`, *optional*): Wins over every other source.

    Returns:
        `int`: an id in ``0..vocab_size - 1``.

    Raises:
        [`MaskTokenNotFoundError`] (a `ValueError`) when no source has one; `ValueError` for an id that is not an
        int or lies outside the vocabulary.
    """
    family = _family_of(model_or_config)
    configs = _configs_of(model_or_config)
    name = type(_unwrap(model_or_config)).__name__
    return _resolve_mask_token_id(family, configs, tokenizer, mask_token_id, name)


def resolve_mask_token_id(
    family: BackboneFamily, config: Any, tokenizer: Any = None, mask_token_id: Optional[int] = None
) -> int:
    """The mask token id of a backbone ``config`` of ``family``, with [`mask_token_id_for`]'s precedence (explicit
    argument, config, tokenizer, family rule). Kept for callers that hold a family and a config."""
    return _resolve_mask_token_id(family, _configs_of(config), tokenizer, mask_token_id, type(config).__name__)


def _resolve_mask_token_id(
    family: Optional[BackboneFamily], configs: List[Any], tokenizer: Any, mask_token_id: Any, name: str
) -> int:
    attr = family.mask_token_id_attr if family is not None else "mask_token_id"
    found, source = mask_token_id, "argument mask_token_id"
    for config in configs:
        for key in dict.fromkeys((attr, "mask_token_id")):
            if found is None:
                found, source = getattr(config, key, None), f"config `{key}` of {type(config).__name__}"
    if found is None and tokenizer is not None:
        found, source = getattr(tokenizer, "mask_token_id", None), "tokenizer `mask_token_id`"
    if found is None and family is not None and family.default_mask_token_id is not None:
        backbone_config = next((c for c in configs if getattr(c, "model_type", None) != "prism"), None)
        found, source = family.default_mask_token_id(backbone_config), f"family {family.name!r} rule"
    if found is None:
        what = f"{family.name!r} backbone" if family is not None else f"{name} model"
        raise MaskTokenNotFoundError(
            f"mask_token_id=None: no mask token is known for this {what}. It was not given, its config has no "
            f"`{attr}`, its family has no default rule, and no tokenizer with a mask token was passed. Pass "
            "`mask_token_id=<id>` (an id inside the vocabulary) or `tokenizer=`."
        )
    if isinstance(found, bool) or not isinstance(found, numbers.Integral):
        raise ValueError(f"mask_token_id={found!r} (from {source}) is not valid; it must be an int.")
    found = int(found)
    vocab = _first_positive_int(configs, VOCAB_SIZE_ATTRS)
    if found < 0 or (vocab is not None and found >= vocab):
        raise ValueError(
            f"mask_token_id={found} (from {source}) is outside the vocabulary: valid ids are "
            f"0..{vocab - 1 if vocab else '?'}."
        )
    return found


# ----- running a backbone ----------------------------------------------------------------------------------
def aligned_logits(
    model: torch.nn.Module,
    input_ids: torch.LongTensor,
    attention_mask: Optional[torch.Tensor] = None,
    **forward_kwargs: Any,
) -> torch.Tensor:
    """One forward of any supported model, returning logits aligned so that position ``i`` predicts token ``i``.

    A [`PrismForMaskedDiffusion`] returns its (already aligned) ``.logits``. A registered backbone is called with its
    family's inputs (the padding mask in the family's convention, MDLM's ``timesteps``, ...) and its logits are
    shifted back for a shifted family (Dream). A model outside the registry is called with ``input_ids`` and
    ``attention_mask`` and its ``.logits`` (or first output) are returned as they are. DDP, `torch.compile` and
    PEFT wrappers are called as such (so that gradients synchronise) and inspected through.

    Args:
        model (`torch.nn.Module`): The model.
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): Token ids.
        attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*): 1 for real tokens, 0 for
            padding. With a ``cache`` whose window is set, the padding mask of the whole cached sequence.
        forward_kwargs: Passed on to the forward. ``cache`` (a [`~prism_hf.models.cache.BlockKVCache`]) is handled as
            [`PrismForMaskedDiffusion.forward`] does: without a window this forward fills it; with a window set,
            ``input_ids`` are the window's tokens and the window's outputs are returned *unaligned* (see
            [`BackboneFamily.window_for`]).

    Returns:
        `torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)` (`(batch_size, W, vocab_size)` for a
        window).
    """
    inner = _unwrap(model)
    if _is_prism(inner):
        return model(input_ids=input_ids, attention_mask=attention_mask, **forward_kwargs).logits
    family = _family_of(inner)
    cache = forward_kwargs.pop("cache", None)
    if family is not None:
        output = model(**family.forward_inputs(input_ids, attention_mask, cache), **forward_kwargs)
        return family.logits_of(output, align=cache is None or getattr(cache, "window", None) is None)
    if cache is not None:
        raise ValueError(
            f"cache=: the {type(inner).__name__} model is outside the family registry, which decides how a cached "
            "forward is called; register its family or run it without a cache."
        )
    inputs = {"input_ids": input_ids} if attention_mask is None else {"input_ids": input_ids, "attention_mask": attention_mask}
    output = model(**inputs, **forward_kwargs)
    logits = output if isinstance(output, torch.Tensor) else getattr(output, "logits", None)
    return output[0] if logits is None else logits


def enable_gradient_checkpointing(
    model: torch.nn.Module,
    activation_checkpointing_kwargs: Optional[Dict[str, Any]] = None,
    every_n_layers: int = 1,
    offload: bool = False,
) -> None:
    """Recompute the backbone's layers in the backward pass instead of keeping their activations (transformers 5's
    ``activation_checkpointing_enable``).

    Works on a backbone, a PEFT-wrapped backbone and a [`PrismForMaskedDiffusion`] (whose small quality head is not
    checkpointed). Behind a PEFT adapter the embedding layer is frozen, so its output is made to require grad:
    the checkpointed blocks would otherwise see inputs without grad and train nothing.

    Args:
        model (`torch.nn.Module`): The model.
        activation_checkpointing_kwargs (`dict`, *optional*): Passed to `torch.utils.checkpoint.checkpoint`.
        every_n_layers (`int`): Checkpoint every n-th layer only (transformers' meaning).
        offload (`bool`): Keep the saved activations in host memory.
    """
    inner = _unwrap(model)
    wrapped = inner.backbone if _is_prism(inner) else inner
    raw = wrapped.get_base_model() if hasattr(wrapped, "get_base_model") else wrapped
    if not getattr(raw, "supports_gradient_checkpointing", False):
        raise ValueError(f"The {type(raw).__name__} backbone does not support gradient checkpointing.")
    raw.activation_checkpointing_enable(
        activation_checkpointing_kwargs=activation_checkpointing_kwargs, every_n_layers=every_n_layers, offload=offload
    )
    if raw is not wrapped:
        raw.enable_input_require_grads()


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
    family = next((f for f in FAMILY_REGISTRY.values() if f.name == name), None)
    if family is None:
        raise UnknownFamilyError(
            f"name={name!r} is not a registered family; registered: {sorted({f.name for f in FAMILY_REGISTRY.values()})}."
        )
    return register_family(dataclasses.replace(family, **changes), overwrite=True)
