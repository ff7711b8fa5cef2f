"""`PrismForMaskedDiffusion`: any masked diffusion backbone plus a per-token quality head."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple, Union

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput, logging

from ..utils.deprecation import rename_kwarg
from .checkpointing import (  # noqa: F401  (CHECKPOINT_WEIGHTS_NAME .. load_backbone: the names of the previous release)
    ADAPTER_DIRNAME,
    CHECKPOINT_WEIGHTS_NAME,
    as_torch_dtype,
    backbone_from_config,
    check_implementation,
    dtype_name,
    is_peft_model,
    load_backbone,
    load_checkpoint,
    load_checkpoint_weights,
    merge_dtype_alias,
    parameter_dtype,
    resolve_backbone,
    save_checkpoint,
    try_load_tokenizer,
    uses_remote_code,
)
from .configuration_prism import PrismConfig
from .families import (
    BackboneFamily,
    MaskTokenNotFoundError,
    enable_gradient_checkpointing,
    get_family,
    hidden_size_of,
    mask_token_id_for,
    vocab_size_of,
)
from .heads import get_head_class

logger = logging.get_logger(__name__)

__all__ = ["PrismModelOutput", "PrismPreTrainedModel", "PrismForMaskedDiffusion", "CHECKPOINT_WEIGHTS_NAME"]

# The private names of the previous release, for the modules that still import them from here.
_is_peft_model = is_peft_model
_as_torch_dtype = as_torch_dtype
_load_backbone = load_backbone
_CAPTURE_ATTR = "_prism_captured_hidden_state"
_STOP_ATTR = "_prism_stop_after_forward"


class _HiddenStateReached(Exception):
    """Raised by the capture hook to end a backbone forward at its last hidden state (``output_logits=False``)."""


@dataclass
class PrismModelOutput(ModelOutput):
    """Output of [`PrismForMaskedDiffusion`].

    Args:
        logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`):
            The unmasking posterior's logits; position ``i`` describes token ``i`` for every family. ``None`` when
            the forward was called with ``output_logits=False``.
        quality_logits (`torch.FloatTensor` of shape `(batch_size, sequence_length)`):
            Quality head logits (float32); ``sigmoid(quality_logits)`` estimates
            ``Pr[x_i = y_i | y with position i masked]``.
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`, *optional*):
            The hidden state the head read, returned when ``output_last_hidden_state=True``.
    """

    logits: Optional[torch.FloatTensor] = None
    quality_logits: Optional[torch.FloatTensor] = None
    last_hidden_state: Optional[torch.FloatTensor] = None

    @property
    def quality(self) -> Optional[torch.Tensor]:
        """``sigmoid(quality_logits)``, shape ``(batch_size, sequence_length)``, values in ``(0, 1)``."""
        return None if self.quality_logits is None else torch.sigmoid(self.quality_logits)


def _capture_hook(module: nn.Module, args: Any, output: Any) -> None:
    # A plain function (not a closure over the PRISM model) so that deep copies of the model keep working.
    hidden = output
    if isinstance(output, ModelOutput):
        hidden = output[0]
    elif isinstance(output, (tuple, list)):
        hidden = output[0]
    setattr(module, _CAPTURE_ATTR, hidden)
    if getattr(module, _STOP_ATTR, False):
        raise _HiddenStateReached()


def _validate_input_ids(input_ids: Any) -> None:
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor of token ids with shape (batch, seq_len); got {type(input_ids).__name__}.")
    if input_ids.dtype not in (torch.long, torch.int, torch.int16, torch.uint8, torch.int8):
        raise TypeError(
            f"input_ids must hold integer token ids (torch.long); got dtype={input_ids.dtype}. Did you pass embeddings or "
            "probabilities instead of ids?"
        )
    if input_ids.dim() != 2:
        raise ValueError(
            f"input_ids must have rank 2, shape (batch, seq_len); got rank {input_ids.dim()} with shape {tuple(input_ids.shape)}. "
            "Use input_ids.unsqueeze(0) for a single sequence."
        )


class PrismPreTrainedModel(PreTrainedModel):
    config_class = PrismConfig
    base_model_prefix = "prism"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def initialize_weights(self):
        # The backbone arrives initialised (pretrained, or by its own post_init) and heads initialise
        # themselves; re-running transformers' initialisation here would overwrite pretrained weights.
        return None


class PrismForMaskedDiffusion(PrismPreTrainedModel):
    """A masked diffusion backbone with a PRISM quality head.

    One backbone forward gives both the unmasking posterior (``logits``) and the per-token quality
    (``quality_logits``): a forward hook captures the backbone's last hidden state, so the backbone is
    never asked to return the hidden states of every layer.

    Build one with [`~PrismForMaskedDiffusion.from_backbone`]; reload a saved one with `from_pretrained`
    (or `AutoModel.from_pretrained`).
    """

    def __init__(self, config: PrismConfig, backbone: Optional[nn.Module] = None):
        super().__init__(config)
        if config.backbone_family is None:
            raise ValueError("PrismConfig.backbone_family is None; build the model with PrismForMaskedDiffusion.from_backbone(...).")
        self.family: BackboneFamily = get_family(config.backbone_family)
        if backbone is None:
            backbone = backbone_from_config(config, self.family)
        self.backbone = backbone
        if config.hidden_size is None:
            config.hidden_size = hidden_size_of(self._raw_backbone().config)
        self.quality_head = get_head_class(config.head_type)(config.hidden_size, **config.head_kwargs)
        self._install_hidden_state_hook()
        self.post_init()

    # ----- backbone plumbing -------------------------------------------------------------------------
    def _raw_backbone(self) -> nn.Module:
        """The backbone without a PEFT wrapper."""
        return self.backbone.get_base_model() if is_peft_model(self.backbone) else self.backbone

    def _hidden_state_module(self) -> nn.Module:
        module = self._raw_backbone()
        path = self.family.hidden_state_module
        if path is None:
            return module.base_model
        for part in path.split("."):
            if not hasattr(module, part):
                raise AttributeError(
                    f"Family {self.family.name!r} expects the last hidden state at backbone.{path}, but "
                    f"{type(module).__name__} has no attribute {part!r}. Re-register the family with the right "
                    "`hidden_state_module` (prism_hf.modeling.families.replace_family)."
                )
            module = getattr(module, part)
        return module

    def _install_hidden_state_hook(self) -> None:
        module = self._hidden_state_module()
        if not getattr(module, "_prism_hook_installed", False):
            module.register_forward_hook(_capture_hook)
            module._prism_hook_installed = True

    def _hidden_state_device(self) -> torch.device:
        """Where the head's input is computed (the hidden-state module may sit on any device of a sharded backbone)."""
        module = self._hidden_state_module()
        tensor = next(module.parameters(), None)
        if tensor is None:
            tensor = next(self._raw_backbone().parameters(), None)
        return torch.device("cpu") if tensor is None else tensor.device

    @property
    def mask_token_id(self) -> int:
        return self.config.mask_token_id

    @property
    def backbone_training(self) -> str:
        return self.config.backbone_training

    def get_input_embeddings(self):
        return self._raw_backbone().get_input_embeddings()

    def set_input_embeddings(self, value):
        self._raw_backbone().set_input_embeddings(value)

    def activation_checkpointing_enable(
        self, activation_checkpointing_kwargs: Optional[Dict[str, Any]] = None, every_n_layers: int = 1, offload: bool = False
    ) -> None:
        """Recompute the backbone's layers in the backward pass instead of keeping their activations (what
        ``TrainingArguments(gradient_checkpointing=True)`` turns on). The quality head is small and is not checkpointed.
        See [`~prism_hf.modeling.families.enable_gradient_checkpointing`].

        Args:
            activation_checkpointing_kwargs (`dict`, *optional*): Passed to `torch.utils.checkpoint.checkpoint`.
            every_n_layers (`int`): Checkpoint every n-th layer only (transformers' meaning).
            offload (`bool`): Keep the saved activations in host memory.
        """
        enable_gradient_checkpointing(self, activation_checkpointing_kwargs, every_n_layers=every_n_layers, offload=offload)

    def activation_checkpointing_disable(self) -> None:
        self._raw_backbone().activation_checkpointing_disable()

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None, **kwargs) -> None:
        """The transformers 4 name of [`activation_checkpointing_enable`]."""
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, **kwargs)

    def gradient_checkpointing_disable(self) -> None:
        """The transformers 4 name of [`activation_checkpointing_disable`]."""
        self.activation_checkpointing_disable()

    # ----- training modes ----------------------------------------------------------------------------
    def set_backbone_training(self, mode: str) -> None:
        """Record how the backbone is trained (``"full"``, ``"lora"``, ``"frozen"``) and set ``requires_grad``.

        ``"lora"`` requires a PEFT-wrapped backbone (see [`enable_lora`]). The mode decides what
        `save_pretrained` writes: trained weights are always saved, untouched ones never duplicated.
        """
        if mode not in ("full", "lora", "frozen"):
            raise ValueError(f"mode={mode!r} is not valid; choose one of ['full', 'lora', 'frozen'].")
        if mode == "lora" and not is_peft_model(self.backbone):
            raise ValueError("mode='lora' needs a LoRA-wrapped backbone: call model.enable_lora(LoraConfig(...)) instead.")
        if mode != "lora" and is_peft_model(self.backbone):
            raise ValueError(f"mode={mode!r} but the backbone carries a LoRA adapter; merge or remove it first.")
        if mode == "full":
            self.backbone.requires_grad_(True)
        elif mode == "frozen":
            self.backbone.requires_grad_(False)
        self.config.backbone_training = mode

    def freeze_backbone(self) -> "PrismForMaskedDiffusion":
        """Train only the quality head (checkpoints then hold only the head when the backbone has a reference)."""
        self.set_backbone_training("frozen")
        return self

    def enable_lora(self, peft_config: Any = None, **lora_kwargs) -> "PrismForMaskedDiffusion":
        """Wrap the backbone with a PEFT adapter (LoRA by default); the quality head stays fully trainable.

        Args:
            peft_config (`peft.PeftConfig`, *optional*): The adapter configuration. When omitted, a
                `LoraConfig(**lora_kwargs)` is built.
        """
        from peft import LoraConfig, get_peft_model

        if is_peft_model(self.backbone):
            raise ValueError("The backbone already carries a PEFT adapter.")
        if peft_config is None:
            peft_config = LoraConfig(**lora_kwargs)
        elif lora_kwargs:
            raise ValueError("Pass either peft_config or LoRA keyword arguments, not both.")
        self.backbone = get_peft_model(self.backbone, peft_config)
        self.config.backbone_training = "lora"
        self.quality_head.requires_grad_(True)
        return self

    # ----- forward ------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: Optional[torch.Tensor] = None,
        output_last_hidden_state: bool = False,
        output_logits: bool = True,
        return_dict: Optional[bool] = None,
        cache: Any = None,
        **backbone_kwargs,
    ) -> Union[PrismModelOutput, tuple]:
        """Run the backbone once; return the posterior logits and the quality logits.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): Token ids, with
                ``config.mask_token_id`` at masked positions.
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*): 1 for real
                tokens, 0 for padding. Converted to the backbone family's convention.
            output_last_hidden_state (`bool`): Also return the hidden state read by the head.
            output_logits (`bool`, defaults to `True`): ``False`` stops the backbone at its last hidden state and
                returns ``logits=None``: only the quality is computed, without the vocabulary projection (the
                second forward of a PRISM training step needs nothing else).
            return_dict (`bool`, *optional*): Return a [`PrismModelOutput`] (default) or a tuple.
            cache ([`~prism_hf.models.cache.BlockKVCache`], *optional*): A block-decoding cache, for backbones whose
                ``supports_block_kv_cache`` is `True` (the native LLaDA and Dream ports). Without a window this forward
                fills it. With a window (``cache.set_window(positions)``), ``input_ids`` are the tokens at those
                positions, ``attention_mask`` is the padding mask of the whole cached sequence, and the outputs are the
                backbone's own at the window's positions, *not* aligned for a shifted family: use
                ``family.window_for`` to find the output that describes each token.
            backbone_kwargs: Passed on to the backbone's forward.
        """
        window = self._check_forward_inputs(input_ids, attention_mask, cache)
        inputs = {**self.family.forward_inputs(input_ids.long(), attention_mask, cache), **backbone_kwargs}
        outputs, hidden = self._run_backbone(inputs, stop_at_hidden_state=not output_logits)
        logits = self.family.logits_of(outputs, align=window is None) if output_logits else None
        if window is None:
            hidden = self.family.align(hidden)
        # A window holds no padding of its own: its attention mask is the whole cached sequence's.
        quality_logits = self._quality_logits(hidden, attention_mask if window is None else None)
        output = PrismModelOutput(
            logits=logits,
            quality_logits=quality_logits,
            last_hidden_state=hidden if output_last_hidden_state else None,
        )
        return output.to_tuple() if return_dict is False else output

    def _check_forward_inputs(self, input_ids: Any, attention_mask: Optional[torch.Tensor], cache: Any) -> Optional[torch.Tensor]:
        """Refuse what the forward cannot run; returns the cache's window (`None` for a full forward)."""
        _validate_input_ids(input_ids)
        window = None if cache is None else getattr(cache, "window", None)
        if cache is not None and not getattr(self._raw_backbone(), "supports_block_kv_cache", False):
            raise ValueError(
                f"cache=: the {type(self._raw_backbone()).__name__} backbone has no block-decoding key/value cache (the "
                "native LLaDA and Dream ports do); run it without one."
            )
        if window is not None and not getattr(self.quality_head, "pointwise", True):
            raise ValueError(
                f"A cached window forward cannot score quality with the {self.config.head_type!r} head: it attends across "
                "positions and would see only the window. Use kv_cache='none' with this head, or a pointwise head "
                "('mlp', 'linear')."
            )
        if window is None and attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}; got {tuple(attention_mask.shape)}."
            )
        return window

    def _run_backbone(self, inputs: Dict[str, Any], stop_at_hidden_state: bool) -> Tuple[Any, torch.Tensor]:
        """One backbone forward; returns its output (`None` when stopped at the hidden state) and the last hidden state
        captured by the hook."""
        capture_module = self._hidden_state_module()
        outputs = None
        try:
            if stop_at_hidden_state:
                setattr(capture_module, _STOP_ATTR, True)
            try:
                outputs = self.backbone(**inputs)
            except _HiddenStateReached:
                pass
            hidden = getattr(capture_module, _CAPTURE_ATTR, None)
        finally:
            for attr in (_CAPTURE_ATTR, _STOP_ATTR):
                if hasattr(capture_module, attr):
                    delattr(capture_module, attr)
        if hidden is None:
            raise RuntimeError(
                f"The {self.family.name!r} family's hidden-state module did not run during the backbone forward; "
                "check `hidden_state_module` in its registry entry."
            )
        return outputs, hidden

    def _quality_logits(self, hidden: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """The head on the hidden state, on the head's device and dtype; float32 logits `(batch_size, L)`."""
        head_param = next(self.quality_head.parameters())
        if attention_mask is not None:
            attention_mask = attention_mask.to(head_param.device)
        return self.quality_head(hidden.to(device=head_param.device, dtype=head_param.dtype), attention_mask).float()

    # ----- construction -------------------------------------------------------------------------------
    @classmethod
    def from_backbone(
        cls,
        backbone: Union[str, os.PathLike, PreTrainedModel],
        *,
        mask_token_id: Optional[int] = None,
        head_type: Optional[str] = None,
        head_kwargs: Optional[Dict[str, Any]] = None,
        tokenizer: Any = None,
        hidden_size: Optional[int] = None,
        backbone_training: str = "full",
        revision: Optional[str] = None,
        trust_remote_code: bool = False,
        backbone_implementation: str = "native",
        dtype: Any = None,
        **load_kwargs,
    ) -> "PrismForMaskedDiffusion":
        """Wrap a masked diffusion backbone and add a fresh quality head.

        Args:
            backbone (`str`, `os.PathLike` or `PreTrainedModel`): A Hub id or local path (loaded with the
                family's Auto class), or an already loaded model.
            mask_token_id (`int`, *optional*): Overrides the mask id found in the backbone config / tokenizer.
                Otherwise the config's, then the tokenizer's, then the family's rule (MDLM: the last vocabulary id)
                ([`~prism_hf.modeling.families.mask_token_id_for`]).
            head_type (`str`, *optional*, defaults to `"mlp"`): Quality head type: ``"linear"``, ``"mlp"``,
                ``"transformer"`` or a registered name. Its deprecated name ``head`` still works until prism_hf 0.3.0.
            head_kwargs (`dict`, *optional*): Constructor arguments of the head.
            tokenizer (*optional*): Tokenizer whose ``mask_token_id`` is used when neither the config nor the family
                rule gives one. When ``backbone`` is a Hub id or path and no mask id is found, its tokenizer is tried.
            hidden_size (`int`, *optional*): Width of the last hidden state when the config does not say.
            backbone_training (`str`): ``"full"`` (default), ``"frozen"``; use `enable_lora` for LoRA.
            revision (`str`, *optional*): Hub revision of the backbone; the resolved commit is recorded.
            trust_remote_code (`bool`): Only for backbones that prism_hf has no native implementation of (and for
                ``backbone_implementation="remote"``). LLaDA, Dream and MDLM load with the native ports in
                ``prism_hf.models`` and ignore it. Never turned on for you.
            backbone_implementation (`str`): ``"native"`` (default) or ``"remote"``: the explicit opt-out that runs
                the Hub's published remote code of a family that has a native port (it needs
                ``trust_remote_code=True``; the published LLaDA and Dream code does not load under transformers 5).
            dtype (*optional*): Load dtype of the backbone, e.g. ``torch.bfloat16``. When omitted, transformers 5
                loads the dtype the checkpoint was saved in (``dtype="auto"``: bfloat16 for the LLaDA-8B and Dream-7B
                Hub checkpoints). The quality head is always created in float32. The dtype is recorded in the
                config, and `from_pretrained` restores it.
            load_kwargs: Other `from_pretrained` arguments of the backbone (``cache_dir``, ``token``,
                ``attn_implementation``, ``device_map``, ...).
        """
        head_type = rename_kwarg(load_kwargs, "head", "head_type", "PrismForMaskedDiffusion.from_backbone",
                                 current=head_type) or "mlp"
        get_head_class(head_type)  # fail early on an unknown head type
        check_implementation(backbone_implementation, trust_remote_code)
        dtype = merge_dtype_alias(load_kwargs, dtype)
        backbone_model, reference, revision = resolve_backbone(
            backbone, revision=revision, trust_remote_code=trust_remote_code,
            backbone_implementation=backbone_implementation, dtype=dtype, **load_kwargs,
        )
        family = get_family(getattr(backbone_model.config, "model_type", None) or "")
        uses_remote = uses_remote_code(family, trust_remote_code, backbone_implementation)
        config = PrismConfig(
            backbone_config=backbone_model.config.to_dict(),
            backbone_name_or_path=reference,
            backbone_revision=revision,
            backbone_trust_remote_code=uses_remote,
            backbone_implementation=backbone_implementation,
            backbone_dtype=dtype_name(parameter_dtype(backbone_model)),
            backbone_family=backbone_model.config.model_type,
            backbone_training="full",
            head_type=head_type,
            head_kwargs=head_kwargs,
            hidden_size=hidden_size or hidden_size_of(backbone_model.config),
            mask_token_id=_backbone_mask_token_id(backbone_model, mask_token_id, tokenizer, reference, revision, uses_remote),
            vocab_size=vocab_size_of(backbone_model.config),
        )
        model = cls(config, backbone=backbone_model)
        # The head stays float32 (it is tiny, and its BCE is sensitive to precision) on the device of the hidden state
        # it reads; the forward casts the hidden state to the head's dtype.
        model.quality_head.to(device=model._hidden_state_device())
        if backbone_training != "full":
            model.set_backbone_training(backbone_training)
        return model

    # ----- serialisation ------------------------------------------------------------------------------
    def save_pretrained(
        self,
        save_directory: Union[str, os.PathLike],
        is_main_process: bool = True,
        state_dict: Optional[Dict[str, torch.Tensor]] = None,
        push_to_hub: bool = False,
        **kwargs,
    ) -> None:
        """Save the checkpoint as safetensors (never pickle).

        Args:
            save_directory: Folder to write (created if missing).
            is_main_process (`bool`): Only the main process writes (distributed training).
            state_dict (`dict`, *optional*): Weights to save instead of ``self.state_dict()`` (e.g. gathered by DeepSpeed).
            push_to_hub (`bool`): Also upload the folder with [`push_to_hub`] (``repo_id`` kwarg, default the folder name).

        Layout ([`~prism_hf.modeling.checkpointing`]): ``config.json``, ``model.safetensors`` (the head, plus the
        backbone's weights only when the backbone is fully fine-tuned or has no Hub/path reference), ``adapter/`` (the
        PEFT adapter when LoRA is used) and ``README.md`` (model card). A LoRA checkpoint of an 8B backbone is megabytes.
        """
        if kwargs.pop("safe_serialization", True) is False:
            raise ValueError("safe_serialization=False is not supported: PRISM checkpoints are always safetensors.")
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory={str(save_directory)!r} is a file; pass a directory.")
        if not is_main_process:
            return None
        save_checkpoint(self, save_directory, state_dict=state_dict)
        if push_to_hub:
            self.push_to_hub(kwargs.pop("repo_id", os.path.basename(os.path.normpath(save_directory))), **kwargs)
        return None

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: Optional[str] = None,
        private: Optional[bool] = None,
        token: Union[bool, str, None] = None,
        revision: Optional[str] = None,
        create_pr: bool = False,
        **kwargs,
    ):
        """Save with `save_pretrained` (adapter-only when LoRA) and upload the folder, model card included.

        Args:
            repo_id (`str`): ``"user/name"`` of the Hub repo (created if missing).
            commit_message (`str`, *optional*): Defaults to ``"Upload PRISM checkpoint"``.
            private, token, revision, create_pr: As in `huggingface_hub.HfApi.upload_folder`.
        """
        import tempfile

        from huggingface_hub import HfApi

        if not repo_id or not isinstance(repo_id, str):
            raise ValueError(f"repo_id={repo_id!r} must be a Hub repo id such as 'user/prism-llada-code'.")
        api = HfApi(token=token if isinstance(token, str) else None)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as tmp_dir:
            self.save_pretrained(tmp_dir)
            return api.upload_folder(
                repo_id=repo_id,
                folder_path=tmp_dir,
                commit_message=commit_message or "Upload PRISM checkpoint",
                revision=revision,
                create_pr=create_pr,
            )

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: Union[str, os.PathLike],
        *model_args,
        backbone: Union[None, str, os.PathLike, nn.Module] = None,
        trust_remote_code: Optional[bool] = None,
        backbone_implementation: Optional[str] = None,
        dtype: Any = None,
        revision: Optional[str] = None,
        is_trainable: bool = False,
        device: Union[None, str, torch.device] = None,
        **kwargs,
    ) -> "PrismForMaskedDiffusion":
        """Load a PRISM checkpoint saved by `save_pretrained` (local folder or Hub repo).

        The backbone is resolved from the reference recorded in the config (Hub id + revision, or a path)
        unless the checkpoint holds its full weights; pass ``backbone=`` (a loaded model or a local path)
        to point it elsewhere, e.g. when offline. The layout is read by
        [`~prism_hf.modeling.checkpointing.load_checkpoint`].

        Args:
            pretrained_model_name_or_path: Folder or Hub repo id of the PRISM checkpoint.
            backbone (*optional*): Backbone to use instead of the recorded reference.
            trust_remote_code (`bool`, *optional*): Must be ``True`` when the backbone runs remote code (a family
                without a native port in ``prism_hf.models``, or ``backbone_implementation="remote"``).
            backbone_implementation (`str`, *optional*): ``"native"`` or ``"remote"``; defaults to what the
                checkpoint recorded (``"native"`` for checkpoints written before it was recorded).
            dtype (*optional*): The backbone's dtype. When omitted, the dtype recorded at save time is restored
                exactly (checkpoints that predate the record load as transformers would: ``"auto"``). ``"auto"``
                keeps the dtype stored with the backbone's weights. The quality head keeps its saved dtype.
                ``torch_dtype`` (transformers 4's name) is accepted.
            revision (`str`, *optional*): Revision of the PRISM checkpoint repo.
            is_trainable (`bool`): Load the LoRA adapter as trainable (to continue training).
            device (*optional*): Move the model there after loading.
            kwargs: ``cache_dir``, ``token``, ``local_files_only``, ``force_download`` apply to the checkpoint and the
                backbone; ``subfolder`` to the checkpoint. Every other keyword is passed on to the backbone: to its
                ``from_pretrained`` when it is loaded by reference (``attn_implementation``, ``device_map``,
                ``low_cpu_mem_usage``, ``max_memory``, ``use_safetensors``, ...), to its ``from_config`` when the
                checkpoint stores its weights (``attn_implementation``, ...; ``device_map`` then names one device, and
                ``low_cpu_mem_usage`` / ``use_safetensors`` change nothing: the backbone is built once and filled once).
        """
        return load_checkpoint(
            cls, pretrained_model_name_or_path, backbone=backbone, trust_remote_code=trust_remote_code,
            backbone_implementation=backbone_implementation, dtype=dtype, revision=revision, is_trainable=is_trainable,
            device=device, **kwargs,
        )


def _backbone_mask_token_id(backbone: nn.Module, mask_token_id: Optional[int], tokenizer: Any, reference: Optional[str],
                            revision: Optional[str], trust_remote_code: bool) -> int:
    """[`mask_token_id_for`] the backbone; when nothing gives one and the backbone came from a Hub id or a path, the
    tokenizer stored with it is tried."""
    try:
        return mask_token_id_for(backbone, tokenizer=tokenizer, mask_token_id=mask_token_id)
    except MaskTokenNotFoundError:
        if tokenizer is not None or reference is None:
            raise
    tokenizer = try_load_tokenizer(reference, revision=revision, trust_remote_code=trust_remote_code)
    return mask_token_id_for(backbone, tokenizer=tokenizer)
