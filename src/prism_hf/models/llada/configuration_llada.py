"""Configuration of the native LLaDA port (``GSAI-ML/LLaDA-8B-Instruct``, ``-Base``, ``GSAI-ML/LLaDA-1.5``)."""

from __future__ import annotations

from typing import Optional

from transformers import PretrainedConfig

from ...utils.validation import check_positive_float, check_positive_int, check_probability, check_supported, is_int

__all__ = [
    "LLaDAConfig",
    "SUPPORTED_ACTIVATION_TYPES",
    "SUPPORTED_BLOCK_TYPES",
    "SUPPORTED_INIT_FNS",
    "SUPPORTED_LAYER_NORM_TYPES",
]

#: Transformer blocks the port implements. ``"llama"``: separate q/k/v projections and a gated MLP
#: (``act(ff_proj(x)) * up_proj(x)``), the block of every released LLaDA checkpoint. ``"sequential"``: one fused
#: ``att_proj`` and an ungated MLP (OLMo's block). The published class also names ``"parallel"``, which its own code
#: never builds.
SUPPORTED_BLOCK_TYPES = ("llama", "sequential")
#: Norms the port implements. ``"default"``: `torch.nn.functional.layer_norm` with eps 1e-5 (as upstream, which
#: ignores ``rms_norm_eps`` there); ``"rms"``: RMSNorm in float32; ``"gemma_rms"``: RMSNorm scaled by
#: ``1 + weight``. Upstream's ``"low_precision"`` (a LayerNorm run in the autocast dtype) and ``"amd_compatible"``
#: (which its code cannot build) are not implemented.
SUPPORTED_LAYER_NORM_TYPES = ("default", "rms", "gemma_rms")
#: MLP activations. ``"swiglu"`` halves the MLP width (``silu(gate) * x`` on the two halves of ``ff_proj``'s output)
#: and only fits the ``"sequential"`` block: upstream's ``"llama"`` block with ``"swiglu"`` fails on a shape mismatch.
SUPPORTED_ACTIVATION_TYPES = ("silu", "gelu", "relu", "swiglu")
#: Weight initialisations of a freshly built model (the published ``init_fn`` values).
SUPPORTED_INIT_FNS = ("normal", "mitchell", "kaiming_normal", "fan_in", "full_megatron")


_PORT = "the native LLaDA port"


class LLaDAConfig(PretrainedConfig):
    r"""Configuration of [`LLaDAModelLM`], LLaDA's bidirectional Llama-style transformer (Nie et al., 2025).

    The attribute names are those of the published ``config.json`` (the OLMo-style fields of LLaDA's remote
    ``configuration_llada.LLaDAConfig``), so the Hub's config loads into this class unchanged, ``auto_map`` and
    ``architectures`` included. The defaults are LLaDA-8B-Instruct's architecture (the published class defaults to a
    GPT-2-sized OLMo with ``rope=False``, which its own forward rejects); every released checkpoint's
    ``config.json`` lists every field, so the defaults only matter for configs written by hand.

    A value the port does not implement (``alibi=True``, ``rope=False``, ``block_type="parallel"``, a
    ``layer_norm_type`` outside [`SUPPORTED_LAYER_NORM_TYPES`], ``clip_qkv``, ``block_group_size > 1``, ...) raises a
    `ValueError` naming the field, its value and the supported values: the port never silently computes something
    else than the published code would.

    Standard names are mapped onto LLaDA's: ``hidden_size`` -> ``d_model``, ``num_attention_heads`` -> ``n_heads``,
    ``num_hidden_layers`` -> ``n_layers``, ``max_position_embeddings`` -> ``max_sequence_length``,
    ``tie_word_embeddings`` -> ``weight_tying``; ``num_key_value_heads`` and ``head_dim`` are derived.

    Args:
        d_model (`int`, *optional*, defaults to 4096): Width of the token embeddings and of every block.
        n_heads (`int`, *optional*, defaults to 32): Query heads per block; ``d_model / n_heads`` must be an even int.
        n_kv_heads (`int`, *optional*): Key/value heads (grouped-query attention when smaller than ``n_heads``,
            which it must divide). `None` (the default) means ``n_heads`` (or 1 with ``multi_query_attention=True``);
            LLaDA-8B's config says 32.
        n_layers (`int`, *optional*, defaults to 32): Number of blocks.
        mlp_ratio (`int`, *optional*, defaults to 4): MLP width as a multiple of ``d_model`` when
            ``mlp_hidden_size`` is `None`.
        mlp_hidden_size (`int`, *optional*, defaults to 12288): MLP width (of ``ff_proj`` and ``up_proj``).
        activation_type (`str`, *optional*, defaults to `"silu"`): One of [`SUPPORTED_ACTIVATION_TYPES`].
        block_type (`str`, *optional*, defaults to `"llama"`): One of [`SUPPORTED_BLOCK_TYPES`].
        block_group_size (`int`, *optional*, defaults to 1): Upstream's FSDP grouping of blocks, which renames the
            parameters (``block_groups.{g}.{i}``); only 1 is supported.
        alibi (`bool`, *optional*, defaults to `False`): ALiBi biases; not supported (upstream's forward asserts
            it is off).
        alibi_bias_max (`float`, *optional*, defaults to 8.0): Recorded, unused (ALiBi is off).
        rope (`bool`, *optional*, defaults to `True`): Rotary position embeddings; must be `True` (upstream's forward
            asserts it).
        rope_full_precision (`bool`, *optional*, defaults to `True`): Rotate queries and keys in float32 whatever the
            model's dtype; `False` rotates in the dtype of the queries, as upstream.
        flash_attention (`bool`, *optional*, defaults to `False`): Recorded, not used: choose the attention kernel
            with ``attn_implementation`` (``"sdpa"``, ``"eager"``, ``"flash_attention_2"``), which all compute the
            same attention.
        attention_dropout (`float`, *optional*, defaults to 0.0): Dropout on the attention weights (training only).
        multi_query_attention (`bool`, *optional*): Upstream's multi-query switch: `True` means one key/value head.
            Must agree with ``n_kv_heads`` when both are set.
        attention_layer_norm (`bool`, *optional*, defaults to `False`): Normalise queries and keys (``q_norm``,
            ``k_norm``) before the heads are split.
        residual_dropout (`float`, *optional*, defaults to 0.0): Dropout on both residual branches (training only).
        embedding_dropout (`float`, *optional*, defaults to 0.0): Dropout on the token embeddings (training only).
        input_emb_norm (`bool`, *optional*, defaults to `False`): Scale the token embeddings by ``sqrt(d_model)``.
        layer_norm_type (`str`, *optional*, defaults to `"rms"`): One of [`SUPPORTED_LAYER_NORM_TYPES`].
        layer_norm_with_affine (`bool`, *optional*, defaults to `True`): Give the block and final norms a weight.
        rms_norm_eps (`float`, *optional*, defaults to 1e-5): Epsilon of the RMS norms.
        attention_layer_norm_with_affine (`bool`, *optional*, defaults to `True`): Give ``q_norm`` / ``k_norm`` a
            weight.
        max_sequence_length (`int`, *optional*, defaults to 4096): Context length the model was trained for. Rotary
            positions are computed per call, so it is not a hard limit.
        train_max_sequence_length (`int`, *optional*, defaults to 1024): Recorded, unused (as upstream).
        rope_theta (`float`, *optional*, defaults to 500000.0): Base of the rotary frequencies.
        include_qkv_bias (`bool`, *optional*, defaults to `False`): Biases on the q/k/v (or fused ``att_proj``)
            projections.
        include_bias (`bool`, *optional*, defaults to `False`): Biases on every linear layer (and, unless
            ``bias_for_layer_norm`` says otherwise, on the norms).
        bias_for_layer_norm (`bool`, *optional*, defaults to `False`): Biases on the norms; `None` follows
            ``include_bias``.
        scale_logits (`bool`, *optional*, defaults to `False`): Multiply the logits by ``1 / sqrt(d_model)``.
        vocab_size (`int`, *optional*, defaults to 126464): Number of token ids of the tokenizer.
        embedding_size (`int`, *optional*, defaults to 126464): Rows of the embedding and of the output projection
            (at least ``vocab_size``; `None` means ``vocab_size``). The logits have this width, as upstream.
        weight_tying (`bool`, *optional*, defaults to `False`): Use the embedding matrix as the output projection.
        eos_token_id (`int`, *optional*, defaults to 126081): ``<|eot_id|>`` / ``<|endoftext|>`` of LLaDA's tokenizer.
        pad_token_id (`int`, *optional*, defaults to 126081): Padding id (LLaDA pads with its EOS id).
        mask_token_id (`int`, *optional*, defaults to 126336): The diffusion mask token ``<|mdm_mask|>``.
        init_device (`str`, *optional*): Recorded, unused (the device comes from ``from_pretrained``/``device_map``).
        init_fn (`str`, *optional*, defaults to `"mitchell"`): Initialisation of a freshly built model, one of
            [`SUPPORTED_INIT_FNS`] (see `LLaDAPreTrainedModel._init_weights`).
        init_std (`float`, *optional*, defaults to 0.02): Standard deviation of the ``"normal"`` and
            ``"full_megatron"`` initialisations.
        init_cutoff_factor (`float`, *optional*): Truncate the normal initialisations at this many standard
            deviations (`None`: no truncation for ``"normal"``, 3 for ``"full_megatron"``).
        precision (`str`, *optional*): Recorded, unused (upstream's training precision, e.g. ``"amp_bf16"``).
        use_cache (`bool`, *optional*, defaults to `False`): Recorded, unused: the port has no key/value cache yet
            (its forward refuses ``use_cache=True``).
        clip_qkv (`float`, *optional*): OLMo's clipping of q/k/v; only `None` is supported.

    Example:
        ```python
        from prism_hf.models.llada import LLaDAConfig, LLaDAModelLM

        config = LLaDAConfig(d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=128)
        model = LLaDAModelLM(config)  # a 2-block LLaDA with the real vocabulary and mask id
        ```
    """

    model_type = "llada"
    keys_to_ignore_at_inference = ["past_key_values"]
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "n_heads",
        "num_hidden_layers": "n_layers",
        "max_position_embeddings": "max_sequence_length",
        "tie_word_embeddings": "weight_tying",
    }

    d_model: int = 4096
    n_heads: int = 32
    n_kv_heads: Optional[int] = None
    n_layers: int = 32
    mlp_ratio: int = 4
    mlp_hidden_size: Optional[int] = 12288
    activation_type: str = "silu"
    block_type: str = "llama"
    block_group_size: int = 1
    alibi: bool = False
    alibi_bias_max: float = 8.0
    rope: bool = True
    rope_full_precision: bool = True
    flash_attention: bool = False
    attention_dropout: float = 0.0
    multi_query_attention: Optional[bool] = None
    attention_layer_norm: bool = False
    residual_dropout: float = 0.0
    embedding_dropout: float = 0.0
    input_emb_norm: bool = False
    layer_norm_type: str = "rms"
    layer_norm_with_affine: bool = True
    rms_norm_eps: float = 1e-5
    attention_layer_norm_with_affine: bool = True
    max_sequence_length: int = 4096
    train_max_sequence_length: int = 1024
    rope_theta: float = 500000.0
    include_qkv_bias: Optional[bool] = False
    include_bias: bool = False
    bias_for_layer_norm: Optional[bool] = False
    scale_logits: bool = False
    vocab_size: int = 126464
    embedding_size: Optional[int] = 126464
    weight_tying: bool = False
    eos_token_id: Optional[int] = 126081
    pad_token_id: Optional[int] = 126081
    mask_token_id: Optional[int] = 126336
    init_device: Optional[str] = None
    init_fn: str = "mitchell"
    init_std: float = 0.02
    init_cutoff_factor: Optional[float] = None
    precision: Optional[str] = None
    use_cache: bool = False
    clip_qkv: Optional[float] = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.architectures is None:
            self.architectures = ["LLaDAModelLM"]
        self._validate()

    # ----- derived sizes (one place for the rules upstream spreads over its modules) -----------------------------
    @property
    def head_dim(self) -> int:
        """Width of one attention head, ``d_model // n_heads``."""
        return self.d_model // self.n_heads

    @property
    def num_key_value_heads(self) -> int:
        """Key/value heads after upstream's ``effective_n_kv_heads`` rule (``n_kv_heads``, else 1 with
        ``multi_query_attention``, else ``n_heads``)."""
        if self.n_kv_heads is not None:
            return self.n_kv_heads
        return 1 if self.multi_query_attention else self.n_heads

    @property
    def intermediate_size(self) -> int:
        """Output width of ``ff_proj`` (and ``up_proj``): ``mlp_hidden_size``, else ``mlp_ratio * d_model``."""
        return self.mlp_hidden_size if self.mlp_hidden_size is not None else self.mlp_ratio * self.d_model

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding and of the output projection: ``embedding_size``, else ``vocab_size``."""
        return self.embedding_size if self.embedding_size is not None else self.vocab_size

    @property
    def norm_bias(self) -> bool:
        """Whether the norms carry a bias: ``bias_for_layer_norm``, else ``include_bias``."""
        return bool(self.include_bias if self.bias_for_layer_norm is None else self.bias_for_layer_norm)

    # ----- validation -----------------------------------------------------------------------------------------------
    def _validate(self) -> None:
        for name in ("d_model", "n_heads", "n_layers", "vocab_size", "max_sequence_length"):
            check_positive_int(name, getattr(self, name))
        for name in ("n_kv_heads", "mlp_hidden_size", "embedding_size"):
            check_positive_int(name, getattr(self, name), optional=True)
        if self.mlp_hidden_size is None:
            check_positive_int("mlp_ratio", self.mlp_ratio)
        if self.d_model % self.n_heads != 0 or (self.d_model // self.n_heads) % 2 != 0:
            raise ValueError(
                f"d_model={self.d_model} and n_heads={self.n_heads}: d_model must be a multiple of n_heads with an even "
                "head width (rotary embeddings rotate pairs of channels), e.g. d_model=4096, n_heads=32."
            )
        if self.multi_query_attention is not None and self.n_kv_heads is not None:
            expected = 1 if self.multi_query_attention else self.n_heads
            if self.n_kv_heads != expected:
                raise ValueError(
                    f"multi_query_attention={self.multi_query_attention} and n_kv_heads={self.n_kv_heads} disagree: "
                    f"multi_query_attention={self.multi_query_attention} means n_kv_heads={expected}; set one of them "
                    "to None."
                )
        if self.n_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"n_kv_heads={self.num_key_value_heads} must divide n_heads={self.n_heads} (grouped-query attention "
                "shares each key/value head between n_heads / n_kv_heads query heads)."
            )
        if self.embedding_size is not None and self.embedding_size < self.vocab_size:
            raise ValueError(
                f"embedding_size={self.embedding_size} must be at least vocab_size={self.vocab_size} (or None)."
            )
        for name in ("mask_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or not 0 <= value < self.vocab_size):
                raise ValueError(
                    f"{name}={value!r} must be None or a token id inside the vocabulary, in [0, {self.vocab_size - 1}] "
                    f"(vocab_size={self.vocab_size}); LLaDA-8B's is "
                    f"{ {'mask_token_id': 126336, 'eos_token_id': 126081, 'pad_token_id': 126081}[name] }."
                )
        for name in ("attention_dropout", "residual_dropout", "embedding_dropout"):
            check_probability(name, getattr(self, name))
        check_positive_float("rms_norm_eps", self.rms_norm_eps)
        check_positive_float("rope_theta", self.rope_theta, example="500000.0")

        # Options the port does not implement: refuse them rather than compute something else.
        check_supported("alibi", self.alibi or False, [False], _PORT, "the published forward asserts it is off")
        check_supported("rope", self.rope, [True], _PORT, "the published forward asserts rotary positions")
        check_supported("clip_qkv", self.clip_qkv, [None], _PORT)
        check_supported("block_group_size", self.block_group_size, [1], _PORT, "grouped blocks have other parameter names")
        check_supported("block_type", self.block_type, SUPPORTED_BLOCK_TYPES, _PORT)
        check_supported("layer_norm_type", self.layer_norm_type, SUPPORTED_LAYER_NORM_TYPES, _PORT)
        check_supported("activation_type", self.activation_type, SUPPORTED_ACTIVATION_TYPES, _PORT)
        check_supported("init_fn", self.init_fn, SUPPORTED_INIT_FNS, _PORT)
        if self.activation_type == "swiglu":
            if self.block_type == "llama":
                raise ValueError(
                    "activation_type='swiglu' with block_type='llama' is not implemented by the native LLaDA port (the "
                    "published llama block multiplies a half-width swiglu output by the full-width up_proj and fails); "
                    f"supported activation_type values for block_type='llama': {[a for a in SUPPORTED_ACTIVATION_TYPES if a != 'swiglu']}."
                )
            if self.intermediate_size % 2 != 0:
                raise ValueError(
                    f"activation_type='swiglu' splits the MLP in two halves, so its width must be even; got "
                    f"{self.intermediate_size} (mlp_hidden_size={self.mlp_hidden_size}, mlp_ratio={self.mlp_ratio})."
                )
