"""Configuration of the native MDLM port (the DiT of ``kuleshov-group/mdlm-owt``)."""

from __future__ import annotations

from transformers import PretrainedConfig

from ...utils.validation import check_positive_int, check_probability

__all__ = ["MDLMConfig"]


class MDLMConfig(PretrainedConfig):
    r"""Configuration of [`MDLMForMaskedLM`], the diffusion transformer (DiT) of MDLM (Sahoo et al., 2024).

    The attribute names are those of the public checkpoint's ``config.json`` (``kuleshov-group/mdlm-owt``), so that
    its config loads into this class unchanged. The defaults are that checkpoint's architecture: 12 blocks of width
    768 with 12 heads, a 128-wide conditioning vector, 1024 positions, the GPT-2 vocabulary plus one mask token.

    Args:
        vocab_size (`int`, *optional*, defaults to 50258): Number of token ids, mask included. MDLM's mask token is
            the last id (``vocab_size - 1``); the `mdlm` PRISM family uses that rule.
        model_length (`int`, *optional*, defaults to 1024): Sequence length the model was trained on. Positions are
            rotary, so the forward accepts other lengths; trainers read this as the model's maximum length.
        hidden_dim (`int`, *optional*, defaults to 768): Width of the token embeddings and of every block.
        cond_dim (`int`, *optional*, defaults to 128): Width of the timestep embedding that drives the adaLN
            modulation of every block and of the final layer.
        n_blocks (`int`, *optional*, defaults to 12): Number of DiT blocks.
        n_heads (`int`, *optional*, defaults to 12): Attention heads per block; ``hidden_dim / n_heads`` must be even
            (rotary embeddings rotate pairs of channels).
        dropout (`float`, *optional*, defaults to 0.1): Dropout on the two residual branches of every block (active
            in training mode only). Attention itself has no dropout, as upstream.
        time_conditioning (`bool`, *optional*, defaults to `False`): When `False` (the public checkpoint) the
            ``timesteps`` given to the forward are replaced by zeros, so the adaLN modulation is a constant.

    Example:
        ```python
        from prism_hf.models.mdlm import MDLMConfig, MDLMForMaskedLM

        config = MDLMConfig(vocab_size=65, hidden_dim=32, cond_dim=16, n_blocks=2, n_heads=4, model_length=64)
        model = MDLMForMaskedLM(config)
        ```
    """

    model_type = "mdlm"

    def __init__(
        self,
        vocab_size: int = 50258,
        model_length: int = 1024,
        hidden_dim: int = 768,
        cond_dim: int = 128,
        n_blocks: int = 12,
        n_heads: int = 12,
        dropout: float = 0.1,
        time_conditioning: bool = False,
        **kwargs,
    ):
        for name, value in dict(vocab_size=vocab_size, model_length=model_length, hidden_dim=hidden_dim,
                                cond_dim=cond_dim, n_blocks=n_blocks, n_heads=n_heads).items():
            check_positive_int(name, value)
        if hidden_dim % n_heads != 0 or (hidden_dim // n_heads) % 2 != 0:
            raise ValueError(
                f"hidden_dim={hidden_dim} and n_heads={n_heads}: hidden_dim must be a multiple of n_heads with an even "
                "head width (rotary embeddings rotate pairs of channels), e.g. hidden_dim=768, n_heads=12."
            )
        check_probability("dropout", dropout)
        self.vocab_size = vocab_size
        self.model_length = model_length
        self.hidden_dim = hidden_dim
        self.cond_dim = cond_dim
        self.n_blocks = n_blocks
        self.n_heads = n_heads
        self.dropout = float(dropout)
        self.time_conditioning = bool(time_conditioning)
        super().__init__(**kwargs)
