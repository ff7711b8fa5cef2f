"""Configuration of the native Dream-v0 port (``Dream-org/Dream-v0-Instruct-7B``, ``Dream-org/Dream-v0-Base-7B``)."""

from __future__ import annotations

from typing import Any, Dict, Optional

from transformers import PretrainedConfig

from ...utils.validation import check_positive_float, check_positive_int, check_probability, check_supported, is_int

__all__ = ["DreamConfig", "SUPPORTED_HIDDEN_ACTS", "SUPPORTED_ROPE_TYPES"]

#: Activations of the MLP the port accepts: parameter-free functions of ``transformers.activations.ACT2FN``, the
#: table the published code reads too (Dream-v0 uses ``"silu"``).
SUPPORTED_HIDDEN_ACTS = ("silu", "swish", "gelu", "gelu_new", "gelu_pytorch_tanh", "relu")

#: RoPE variants the port accepts: plain RoPE (every Dream checkpoint) and the variants whose frequencies are fixed
#: once from the config (computed by transformers' own ``ROPE_INIT_FUNCTIONS``, as the published code does).
#: ``"dynamic"`` and ``"longrope"`` are refused: their frequencies change with the length of the input, so a
#: diffusion canvas would see other positions' encodings change as it grows.
SUPPORTED_ROPE_TYPES = ("default", "linear", "yarn", "llama3")

#: Options a Dream-style ``config.json`` may carry that the published model code never reads; the port refuses any
#: value that would ask for a different network than the one both compute (``name -> (accepted values, why)``).
_FIXED_OPTIONS = {
    "use_mrope": ((None, False), "multimodal RoPE is not part of Dream"),
    "attention_bias": ((None, True), "Dream's q/k/v projections always carry a bias and o_proj never does"),
}


_PORT = "the native Dream port"


def _check_token_id(name: str, value: Any, vocab_size: int, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if not is_int(value) or not 0 <= value < vocab_size:
        valid = f"an int in [0, {vocab_size - 1}] (vocab_size={vocab_size})" + (" or None" if allow_none else "")
        raise ValueError(f"{name}={value!r} is outside the vocabulary; it must be {valid}.")


def _rope_parameters(
    rope_theta: Optional[float], rope_scaling: Optional[dict], rope_parameters: Optional[dict]
) -> Dict[str, Any]:
    """One transformers-5 ``rope_parameters`` dict from the Hub's ``rope_theta`` / ``rope_scaling`` fields, or from
    the ``rope_parameters`` a config saved by this port carries."""
    if rope_scaling is not None and rope_parameters is not None:
        raise ValueError(
            f"rope_scaling={rope_scaling!r} and rope_parameters={rope_parameters!r}: pass one of them (rope_scaling is "
            "the Hub's field, rope_parameters the transformers-5 field this port saves)."
        )
    given = rope_parameters if rope_parameters is not None else rope_scaling
    if given is not None and not isinstance(given, dict):
        raise ValueError(f"rope_scaling={given!r} must be a dict (e.g. {{'rope_type': 'linear', 'factor': 2.0}}) or None.")
    params = dict(given or {})
    legacy_type = params.pop("type", None)  # transformers 4 spelled it "type"
    params.setdefault("rope_type", legacy_type or "default")
    if params["rope_type"] not in SUPPORTED_ROPE_TYPES:
        raise ValueError(
            f"rope_scaling rope_type={params['rope_type']!r} is not implemented by the native Dream port; supported: "
            f"{list(SUPPORTED_ROPE_TYPES)}."
        )
    if rope_theta is not None and params.get("rope_theta", rope_theta) != rope_theta:
        raise ValueError(
            f"rope_theta={rope_theta!r} disagrees with rope_parameters['rope_theta']={params['rope_theta']!r}; pass one."
        )
    theta = params.setdefault("rope_theta", 10000.0 if rope_theta is None else rope_theta)
    check_positive_float("rope_theta", theta)
    params["rope_theta"] = float(theta)
    return params


def _check_sizes(sizes: Dict[str, Any]) -> None:
    """Every size is a positive int, and the heads split the width into even head widths (``sizes``: the
    `DreamConfig` arguments by name)."""
    for name, value in sizes.items():
        check_positive_int(name, value)
    hidden_size, heads, kv_heads = sizes["hidden_size"], sizes["num_attention_heads"], sizes["num_key_value_heads"]
    if hidden_size % heads or (hidden_size // heads) % 2:
        raise ValueError(
            f"hidden_size={hidden_size} and num_attention_heads={heads}: hidden_size must be a multiple "
            "of num_attention_heads with an even head width (RoPE rotates pairs of channels), e.g. 3584 and 28."
        )
    if heads % kv_heads:
        raise ValueError(
            f"num_key_value_heads={kv_heads} must divide num_attention_heads={heads} "
            "(each key/value head serves a whole group of query heads)."
        )


def _check_options(hidden_act: str, use_sliding_window: bool, rms_norm_eps: Any, attention_dropout: Any,
                   kwargs: Dict[str, Any]) -> None:
    """Options the port implements only in part are refused outside that part (``kwargs``: the extra config fields)."""
    check_supported("hidden_act", hidden_act, SUPPORTED_HIDDEN_ACTS, _PORT)
    if use_sliding_window:
        raise ValueError(
            f"use_sliding_window={use_sliding_window!r}: sliding-window attention is not implemented by the native "
            "Dream port (nor by the published Dream code); supported: [False]."
        )
    check_positive_float("rms_norm_eps", rms_norm_eps)
    check_probability("attention_dropout", attention_dropout)
    for name, (accepted, why) in _FIXED_OPTIONS.items():
        check_supported(name, kwargs.get(name), accepted, _PORT, why)


def _pop_hub_layout_fields(kwargs: Dict[str, Any], head_dim: int, num_hidden_layers: int) -> None:
    """``head_dim`` and ``layer_types`` of a Hub config are accepted when they describe Dream's own layout (then
    dropped: ``head_dim`` is derived, every layer attends to the whole sequence) and refused otherwise."""
    if kwargs.get("head_dim") not in (None, head_dim):
        raise ValueError(
            f"head_dim={kwargs['head_dim']!r}: Dream's head width is hidden_size // num_attention_heads = {head_dim}; "
            f"supported: [None, {head_dim}]."
        )
    kwargs.pop("head_dim", None)
    layer_types = kwargs.pop("layer_types", None)
    if layer_types is not None and (
        len(layer_types) != num_hidden_layers or any(t != "full_attention" for t in layer_types)
    ):
        raise ValueError(
            f"layer_types={layer_types!r}: every Dream layer attends to the whole sequence; supported: None or "
            f"['full_attention'] * num_hidden_layers ({num_hidden_layers})."
        )


class DreamConfig(PretrainedConfig):
    r"""Configuration of [`DreamModel`], the Dream-v0 diffusion language model (Ye et al., 2025): a Qwen2.5 decoder
    run with bidirectional attention, whose output at position ``i`` predicts the token at ``i + 1``.

    The argument names and defaults are those of the published ``DreamConfig`` (the Hub's remote code), so that the
    Hub's ``config.json`` (which only lists values that differ from these defaults) reads into this class unchanged.
    The 7B checkpoints set ``vocab_size=152064``, ``hidden_size=3584``, ``intermediate_size=18944``,
    ``num_hidden_layers=28``, ``num_attention_heads=28``, ``num_key_value_heads=4``, ``max_position_embeddings=131072``,
    ``rope_theta=1e6``. Options the port does not implement are refused with a `ValueError` rather than ignored.

    Args:
        vocab_size (`int`, *optional*, defaults to 151936): Number of token ids (rows of the embedding and of the
            output projection), mask token included.
        hidden_size (`int`, *optional*, defaults to 4096): Width of the residual stream.
        intermediate_size (`int`, *optional*, defaults to 22016): Width of the gated MLP.
        num_hidden_layers (`int`, *optional*, defaults to 32): Number of decoder layers.
        num_attention_heads (`int`, *optional*, defaults to 32): Query heads per layer; the head width is
            ``hidden_size // num_attention_heads`` and must be even (RoPE rotates pairs of channels).
        num_key_value_heads (`int`, *optional*, defaults to 32): Key/value heads (grouped-query attention when fewer
            than the query heads; must divide them). `None` means as many as the query heads.
        hidden_act (`str`, *optional*, defaults to `"silu"`): MLP activation, one of [`SUPPORTED_HIDDEN_ACTS`].
        max_position_embeddings (`int`, *optional*, defaults to 32768): Longest sequence the RoPE scaling variants
            are set up for. Plain RoPE accepts any length.
        initializer_range (`float`, *optional*, defaults to 0.02): Standard deviation of the normal initialisation of
            linear and embedding weights.
        rms_norm_eps (`float`, *optional*, defaults to 1e-6): Epsilon of the RMS norms.
        use_cache (`bool`, *optional*, defaults to `False`): Kept for the Hub config; the port has no key/value cache
            and its forward refuses ``use_cache=True``.
        tie_word_embeddings (`bool`, *optional*, defaults to `False`): Share the output projection with the input
            embedding (the 7B checkpoints do not).
        rope_theta (`float`, *optional*, defaults to 10000.0): RoPE base.
        rope_scaling (`dict`, *optional*): RoPE scaling as in the Hub config (``{"rope_type"|"type": ..., "factor": ...}``);
            its type must be one of [`SUPPORTED_ROPE_TYPES`]. Stored in transformers-5 form as ``rope_parameters``
            (which a saved config carries instead).
        use_sliding_window (`bool`, *optional*, defaults to `False`): Must be `False` (the published code does not
            implement sliding-window attention either; it only warns).
        sliding_window (`int`, *optional*, defaults to 4096): Kept for the Hub config; stored as `None` since sliding
            windows are off.
        max_window_layers (`int`, *optional*, defaults to 28): Kept for the Hub config; unused without sliding windows.
        attention_dropout (`float`, *optional*, defaults to 0.0): Dropout on the attention probabilities (training
            mode only).
        mask_token_id (`int`, *optional*, defaults to 151666): Id of the mask token; must lie in the vocabulary.
        pad_token_id (`int`, *optional*, defaults to 151643): Id of the padding token (its embedding row gets no
            gradient, as upstream's ``nn.Embedding(padding_idx=...)``); `None` or inside the vocabulary.
        kwargs: Further [`~transformers.PretrainedConfig`] arguments (``bos_token_id``, ``eos_token_id``,
            ``architectures``, ``auto_map``, ...), stored as they are.

    Example:
        ```python
        from prism_hf.models.dream import DreamConfig, DreamModel

        config = DreamConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, mask_token_id=255, pad_token_id=0)
        model = DreamModel(config)
        ```
    """

    model_type = "Dream"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size: int = 151936,
        hidden_size: int = 4096,
        intermediate_size: int = 22016,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        num_key_value_heads: Optional[int] = 32,
        hidden_act: str = "silu",
        max_position_embeddings: int = 32768,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        use_cache: bool = False,
        tie_word_embeddings: bool = False,
        rope_theta: Optional[float] = None,
        rope_scaling: Optional[dict] = None,
        use_sliding_window: bool = False,
        sliding_window: Optional[int] = 4096,
        max_window_layers: int = 28,
        attention_dropout: float = 0.0,
        mask_token_id: int = 151666,
        pad_token_id: Optional[int] = 151643,
        **kwargs,
    ):
        if num_key_value_heads is None:  # as upstream: None means multi-head attention
            num_key_value_heads = num_attention_heads
        _check_sizes(dict(
            vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
            num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
            num_key_value_heads=num_key_value_heads, max_position_embeddings=max_position_embeddings,
        ))
        _check_options(hidden_act, use_sliding_window, rms_norm_eps, attention_dropout, kwargs)
        _check_token_id("mask_token_id", mask_token_id, vocab_size, allow_none=False)
        _check_token_id("pad_token_id", pad_token_id, vocab_size, allow_none=True)
        _pop_hub_layout_fields(kwargs, hidden_size // num_attention_heads, num_hidden_layers)

        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = float(rms_norm_eps)
        self.use_cache = use_cache
        self.use_sliding_window = False
        self.sliding_window = None  # upstream: `sliding_window if use_sliding_window else None`
        self.max_window_layers = max_window_layers
        self.attention_dropout = float(attention_dropout)
        self.mask_token_id = mask_token_id
        # transformers 5 keeps RoPE settings in `rope_parameters`; `rope_theta` stays a top-level field as well, so
        # that a saved config still gives the published code its RoPE base.
        self.rope_parameters = _rope_parameters(rope_theta, rope_scaling, kwargs.pop("rope_parameters", None))
        self.rope_theta = self.rope_parameters["rope_theta"]
        super().__init__(tie_word_embeddings=tie_word_embeddings, pad_token_id=pad_token_id, **kwargs)

    @property
    def head_dim(self) -> int:
        """Width of one attention head, ``hidden_size // num_attention_heads``."""
        return self.hidden_size // self.num_attention_heads
