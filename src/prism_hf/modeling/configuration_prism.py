"""`PrismConfig`: the configuration of a PRISM-wrapped masked diffusion model."""

from __future__ import annotations

from typing import Any, Dict, Optional

from transformers import PretrainedConfig

__all__ = ["PrismConfig", "PRISM_FORMAT_VERSION", "BACKBONE_TRAINING_MODES", "BACKBONE_IMPLEMENTATIONS"]

#: Version of the on-disk checkpoint layout. Bump when a newer layout cannot be read by older code.
PRISM_FORMAT_VERSION = 1
BACKBONE_TRAINING_MODES = ("full", "lora", "frozen")
BACKBONE_IMPLEMENTATIONS = ("native", "remote")


class PrismConfig(PretrainedConfig):
    """Configuration for [`PrismForMaskedDiffusion`].

    Args:
        backbone_config (`dict`, *optional*): The wrapped backbone's config, as ``config.to_dict()``. Used to
            rebuild the backbone when the checkpoint holds its full weights.
        backbone_name_or_path (`str`, *optional*): Hub id or local path the backbone was loaded from. When set,
            checkpoints store only what was trained on top of it (head, LoRA adapter) and
            `from_pretrained` reloads the backbone from here.
        backbone_revision (`str`, *optional*): Hub revision (branch, tag or commit) of the backbone.
        backbone_trust_remote_code (`bool`): Whether loading the backbone needs ``trust_remote_code=True``.
            It is recorded, never applied silently: `from_pretrained` asks the caller to pass it. Families with a
            native implementation in ``prism_hf.models`` (LLaDA, Dream, MDLM) never need it.
        backbone_implementation (`str`): ``"native"`` (default): a family with a native implementation in
            ``prism_hf.models`` is loaded with it. ``"remote"``: the Hub's remote code is used instead (an explicit
            opt-out that also needs ``trust_remote_code=True``).
        backbone_dtype (`str`, *optional*): The backbone's parameter dtype when the checkpoint was saved (e.g.
            ``"float32"``, ``"bfloat16"``). `from_pretrained` without ``dtype`` restores it.
        backbone_family (`str`, *optional*): The backbone's ``model_type``, the key of the family registry.
        backbone_training (`str`): How the backbone is trained: ``"full"``, ``"lora"`` or ``"frozen"``.
            Decides what `save_pretrained` writes.
        head_type (`str`): Quality head type (``"linear"``, ``"mlp"``, ``"transformer"`` or a registered one).
        head_kwargs (`dict`): Extra constructor arguments of the head.
        hidden_size (`int`, *optional*): Width of the backbone's last hidden state (read from the backbone
            config when not given).
        mask_token_id (`int`, *optional*): Id of the mask token of the backbone's vocabulary.
        vocab_size (`int`, *optional*): Size of the backbone's output vocabulary.
        recipe (`dict`, *optional*): Free-form record of how the checkpoint was trained (shown in the model card).
        prism_format_version (`int`): On-disk format version of the checkpoint.
    """

    model_type = "prism"

    def __init__(
        self,
        backbone_config: Optional[Dict[str, Any]] = None,
        backbone_name_or_path: Optional[str] = None,
        backbone_revision: Optional[str] = None,
        backbone_trust_remote_code: bool = False,
        backbone_implementation: str = "native",
        backbone_dtype: Optional[str] = None,
        backbone_family: Optional[str] = None,
        backbone_training: str = "full",
        head_type: str = "mlp",
        head_kwargs: Optional[Dict[str, Any]] = None,
        hidden_size: Optional[int] = None,
        mask_token_id: Optional[int] = None,
        vocab_size: Optional[int] = None,
        recipe: Optional[Dict[str, Any]] = None,
        prism_format_version: int = PRISM_FORMAT_VERSION,
        **kwargs,
    ):
        if backbone_training not in BACKBONE_TRAINING_MODES:
            raise ValueError(
                f"backbone_training={backbone_training!r} is not valid; choose one of {list(BACKBONE_TRAINING_MODES)}."
            )
        if backbone_implementation not in BACKBONE_IMPLEMENTATIONS:
            raise ValueError(
                f"backbone_implementation={backbone_implementation!r} is not valid; choose one of {list(BACKBONE_IMPLEMENTATIONS)}."
            )
        if hasattr(backbone_config, "to_dict"):
            backbone_config = backbone_config.to_dict()
        self.backbone_config = backbone_config
        self.backbone_name_or_path = backbone_name_or_path
        self.backbone_revision = backbone_revision
        self.backbone_trust_remote_code = bool(backbone_trust_remote_code)
        self.backbone_implementation = backbone_implementation
        self.backbone_dtype = backbone_dtype
        self.backbone_family = backbone_family
        self.backbone_training = backbone_training
        self.head_type = head_type
        self.head_kwargs = dict(head_kwargs or {})
        self.hidden_size = hidden_size
        self.mask_token_id = mask_token_id
        self.vocab_size = vocab_size
        self.recipe = dict(recipe or {})
        self.prism_format_version = prism_format_version
        super().__init__(**kwargs)
