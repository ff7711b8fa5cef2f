"""`PrismForMaskedDiffusion`: any masked diffusion backbone plus a per-token quality head."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, PreTrainedModel
from transformers.utils import ModelOutput, logging

from .configuration_prism import PRISM_FORMAT_VERSION, PrismConfig
from .families import BackboneFamily, get_family, hidden_size_of, resolve_mask_token_id, vocab_size_of
from .heads import get_head_class

logger = logging.get_logger(__name__)

__all__ = ["PrismModelOutput", "PrismPreTrainedModel", "PrismForMaskedDiffusion", "CHECKPOINT_WEIGHTS_NAME"]

CHECKPOINT_WEIGHTS_NAME = "model.safetensors"
ADAPTER_DIRNAME = "adapter"
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


def _is_peft_model(module: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a core dependency
        return False
    return isinstance(module, PeftModel)


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
            backbone = _backbone_from_config(config, self.family)
        self.backbone = backbone
        if config.hidden_size is None:
            config.hidden_size = hidden_size_of(self._raw_backbone().config)
        self.quality_head = get_head_class(config.head_type)(config.hidden_size, **config.head_kwargs)
        self._install_hidden_state_hook()
        self.post_init()

    # ----- backbone plumbing -------------------------------------------------------------------------
    def _raw_backbone(self) -> nn.Module:
        """The backbone without a PEFT wrapper."""
        return self.backbone.get_base_model() if _is_peft_model(self.backbone) else self.backbone

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

        Args:
            activation_checkpointing_kwargs (`dict`, *optional*): Passed to `torch.utils.checkpoint.checkpoint`
                (default ``{"use_reentrant": False}``).
            every_n_layers (`int`): Checkpoint every n-th layer only (transformers' meaning).
            offload (`bool`): Keep the saved activations in host memory.
        """
        raw = self._raw_backbone()
        if not getattr(raw, "supports_gradient_checkpointing", False):
            raise ValueError(f"The {type(raw).__name__} backbone does not support gradient checkpointing.")
        raw.activation_checkpointing_enable(
            activation_checkpointing_kwargs=activation_checkpointing_kwargs, every_n_layers=every_n_layers, offload=offload
        )
        if _is_peft_model(self.backbone):
            # With a frozen embedding layer the checkpointed blocks would see inputs without grad.
            raw.enable_input_require_grads()

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
        if mode == "lora" and not _is_peft_model(self.backbone):
            raise ValueError("mode='lora' needs a LoRA-wrapped backbone: call model.enable_lora(LoraConfig(...)) instead.")
        if mode != "lora" and _is_peft_model(self.backbone):
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

        if _is_peft_model(self.backbone):
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
        input_ids = input_ids.long()
        if window is not None:
            inputs = self.family.window_inputs(input_ids, attention_mask, cache)
        else:
            inputs = self.family.backbone_inputs(input_ids, attention_mask)
            if cache is not None:
                inputs["cache"] = cache
        inputs.update(backbone_kwargs)
        capture_module = self._hidden_state_module()
        outputs = None
        try:
            if not output_logits:
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
        logits = None
        if output_logits:
            logits = getattr(outputs, self.family.logits_attr, None)
            if logits is None:
                logits = outputs[0]
            if window is None:
                logits = self.family.align(logits)
        if window is None:
            hidden = self.family.align(hidden)
        head_param = next(self.quality_head.parameters())
        if window is not None:
            attention_mask = None  # the window holds no padding: it is the cached sequence's mask
        if attention_mask is not None:
            attention_mask = attention_mask.to(head_param.device)
        quality_logits = self.quality_head(hidden.to(device=head_param.device, dtype=head_param.dtype), attention_mask).float()
        output = PrismModelOutput(
            logits=logits,
            quality_logits=quality_logits,
            last_hidden_state=hidden if output_last_hidden_state else None,
        )
        if return_dict is False:
            return output.to_tuple()
        return output

    # ----- construction -------------------------------------------------------------------------------
    @classmethod
    def from_backbone(
        cls,
        backbone: Union[str, os.PathLike, PreTrainedModel],
        *,
        mask_token_id: Optional[int] = None,
        head: str = "mlp",
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
            head (`str`): Quality head type: ``"linear"``, ``"mlp"``, ``"transformer"`` or a registered name.
            head_kwargs (`dict`, *optional*): Constructor arguments of the head.
            tokenizer (*optional*): Tokenizer whose ``mask_token_id`` is used when the config has none. When
                ``backbone`` is a Hub id or path and no mask id is found, its tokenizer is tried.
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
        get_head_class(head)  # fail early on an unknown head type
        _check_implementation(backbone_implementation, trust_remote_code)
        if "torch_dtype" in load_kwargs:  # the transformers 4 name
            torch_dtype = load_kwargs.pop("torch_dtype")
            if dtype is not None and torch_dtype is not None and _as_torch_dtype(dtype) != _as_torch_dtype(torch_dtype):
                raise ValueError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree; pass one of them (dtype).")
            dtype = torch_dtype if dtype is None else dtype
        reference = None
        if isinstance(backbone, (str, os.PathLike)):
            reference = str(backbone)
            backbone_model = _load_backbone(
                reference, revision=revision, trust_remote_code=trust_remote_code,
                backbone_implementation=backbone_implementation, dtype=dtype, **load_kwargs
            )
            revision = revision or getattr(backbone_model.config, "_commit_hash", None)
        elif isinstance(backbone, nn.Module):
            if load_kwargs or dtype is not None:
                raise ValueError(
                    f"dtype / loading arguments {sorted(load_kwargs) + (['dtype'] if dtype is not None else [])} only apply "
                    "when backbone is a Hub id or a path; cast or place the loaded model yourself."
                )
            backbone_model = backbone
            name = getattr(getattr(backbone, "config", None), "_name_or_path", "") or ""
            reference = name or None
            revision = revision or getattr(getattr(backbone, "config", None), "_commit_hash", None)
        else:
            raise TypeError(
                f"backbone must be a Hub id, a local path or a loaded model; got {type(backbone).__name__}."
            )
        if _is_peft_model(backbone_model):
            raise ValueError("Pass the plain backbone and call .enable_lora(...) on the PRISM model instead of a PeftModel.")
        family = get_family(getattr(backbone_model.config, "model_type", None) or "")
        uses_remote_code = _uses_remote_code(family, trust_remote_code, backbone_implementation)
        if mask_token_id is None and tokenizer is None and reference is not None:
            cfg_has_mask = getattr(backbone_model.config, family.mask_token_id_attr, None) is not None
            if not cfg_has_mask:
                tokenizer = _try_load_tokenizer(reference, revision=revision, trust_remote_code=uses_remote_code)
        mask_id = resolve_mask_token_id(family, backbone_model.config, tokenizer=tokenizer, mask_token_id=mask_token_id)
        config = PrismConfig(
            backbone_config=backbone_model.config.to_dict(),
            backbone_name_or_path=reference,
            backbone_revision=revision,
            backbone_trust_remote_code=uses_remote_code,
            backbone_implementation=backbone_implementation,
            backbone_dtype=_dtype_name(_parameter_dtype(backbone_model)),
            backbone_family=backbone_model.config.model_type,
            backbone_training="full",
            head_type=head,
            head_kwargs=head_kwargs,
            hidden_size=hidden_size or hidden_size_of(backbone_model.config),
            mask_token_id=mask_id,
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
    def _saves_backbone_weights(self) -> bool:
        return self.config.backbone_name_or_path is None or self.config.backbone_training == "full"

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

        Layout: ``config.json``, ``model.safetensors`` (the head, plus the backbone's weights only when the
        backbone is fully fine-tuned or has no Hub/path reference), ``adapter/`` (the PEFT adapter when
        LoRA is used) and ``README.md`` (model card). A LoRA checkpoint of an 8B backbone is megabytes.
        """
        if kwargs.pop("safe_serialization", True) is False:
            raise ValueError("safe_serialization=False is not supported: PRISM checkpoints are always safetensors.")
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory={str(save_directory)!r} is a file; pass a directory.")
        if not is_main_process:
            return None
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        is_lora = _is_peft_model(self.backbone)
        if is_lora:
            self.config.backbone_training = "lora"
        saves_backbone = self._saves_backbone_weights()
        if state_dict is None:
            state_dict = self.state_dict()
        to_save = {}
        seen = {}
        for key, tensor in state_dict.items():
            if key.startswith("backbone.") and not saves_backbone:
                continue
            ptr = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape)) if tensor.device.type != "meta" else None
            if ptr is not None and ptr in seen:
                continue  # tied weights are stored once; loading restores the tie
            if ptr is not None:
                seen[ptr] = key
            to_save[key] = tensor.detach().contiguous().cpu()
        (save_directory / CHECKPOINT_WEIGHTS_NAME).unlink(missing_ok=True)
        adapter_dir = save_directory / ADAPTER_DIRNAME
        if adapter_dir.is_dir() and not is_lora:
            import shutil

            shutil.rmtree(adapter_dir)  # a stale adapter from an earlier save would be loaded back
        save_file(to_save, str(save_directory / CHECKPOINT_WEIGHTS_NAME), metadata={"format": "pt", "prism_format_version": str(PRISM_FORMAT_VERSION)})
        if is_lora:
            self.backbone.save_pretrained(str(save_directory / ADAPTER_DIRNAME))
        self.config.backbone_weights_saved = saves_backbone
        self.config.backbone_dtype = _dtype_name(_parameter_dtype(self._raw_backbone()))
        self.config.architectures = [type(self).__name__]
        self.config.save_pretrained(save_directory)
        (save_directory / "README.md").write_text(_model_card(self.config, list(to_save)), encoding="utf-8")
        if push_to_hub:
            self.push_to_hub(kwargs.pop("repo_id", save_directory.name), **kwargs)
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
        to point it elsewhere, e.g. when offline.

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
            revision (`str`, *optional*): Revision of the PRISM checkpoint repo.
            is_trainable (`bool`): Load the LoRA adapter as trainable (to continue training).
            device (*optional*): Move the model there after loading.
            kwargs: ``cache_dir``, ``token``, ``local_files_only``, ``force_download`` apply to the checkpoint and the
                backbone; ``subfolder`` to the checkpoint; ``device_map`` places a backbone loaded by reference (a
                backbone stored in the checkpoint accepts a single device); every other keyword
                (``attn_implementation``, ``low_cpu_mem_usage``, ``max_memory``, ``use_safetensors``, ...) is passed on
                to the backbone's ``from_pretrained``.
        """
        kwargs.pop("config", None)  # given by AutoModel; we always read our own config.json
        for internal in ("_from_auto", "_from_pipeline", "_commit_hash", "adapter_kwargs", "code_revision"):
            kwargs.pop(internal, None)
        if "torch_dtype" in kwargs:  # the transformers 4 name, still sent by some loaders (diffusers)
            torch_dtype = kwargs.pop("torch_dtype")
            dtype = torch_dtype if dtype is None else dtype
        checkpoint_kwargs = {k: kwargs.pop(k) for k in ("cache_dir", "token", "local_files_only", "force_download", "subfolder") if k in kwargs}
        shared_hub_kwargs = {k: v for k, v in checkpoint_kwargs.items() if k != "subfolder"}
        backbone_kwargs = {k: v for k, v in kwargs.items() if v is not None}
        folder = _resolve_checkpoint_folder(pretrained_model_name_or_path, revision=revision, **checkpoint_kwargs)
        raw = _read_checkpoint_config(folder, pretrained_model_name_or_path)
        config = PrismConfig.from_dict(raw)
        family = get_family(config.backbone_family)
        implementation = backbone_implementation or raw.get("backbone_implementation", "native")
        _check_implementation(implementation, trust_remote_code)
        stored_backbone = bool(raw.get("backbone_weights_saved", config.backbone_name_or_path is None))
        if dtype is None or (dtype == "auto" and stored_backbone):
            # The recorded dtype; None for older checkpoints (transformers' default). For a backbone stored here,
            # "auto" means the dtype it was stored in, which is the recorded one.
            dtype = raw.get("backbone_dtype") or (None if dtype == "auto" else dtype)
        torch_dtype = _as_torch_dtype(dtype)
        adapter_dir = folder / ADAPTER_DIRNAME

        if isinstance(backbone, nn.Module):
            if backbone_kwargs:
                raise ValueError(f"Loading arguments {sorted(backbone_kwargs)} do not apply to a loaded backbone= model.")
            backbone_model = backbone
        elif backbone is not None:
            backbone_model = _load_backbone(
                str(backbone), trust_remote_code=bool(trust_remote_code), backbone_implementation=implementation,
                dtype=dtype, **shared_hub_kwargs, **backbone_kwargs,
            )
        elif stored_backbone:
            device = _single_device(backbone_kwargs.pop("device_map", None), device)
            backbone_model = _backbone_from_config(
                config, family, trust_remote_code=trust_remote_code, backbone_implementation=implementation, **backbone_kwargs
            )
            if torch_dtype is not None:
                backbone_model.to(dtype=torch_dtype)
        else:
            if _uses_remote_code(family, config.backbone_trust_remote_code, implementation) and trust_remote_code is not True:
                raise ValueError(
                    f"The backbone {config.backbone_name_or_path!r} of this checkpoint runs remote code. Pass "
                    "trust_remote_code=True to from_pretrained if you trust it (it is never turned on for you)."
                )
            try:
                backbone_model = _load_backbone(
                    config.backbone_name_or_path,
                    revision=config.backbone_revision,
                    trust_remote_code=bool(trust_remote_code),
                    backbone_implementation=implementation,
                    dtype=dtype,
                    **shared_hub_kwargs,
                    **backbone_kwargs,
                )
            except (OSError, ValueError) as err:
                raise OSError(
                    f"Cannot load the backbone {config.backbone_name_or_path!r} (revision {config.backbone_revision!r}) that "
                    f"this PRISM checkpoint builds on: {err}\nIf you are offline, download the backbone first (or unset "
                    "HF_HUB_OFFLINE), or pass backbone=<a loaded model or a local folder> to from_pretrained."
                ) from err
        if adapter_dir.is_dir():
            from peft import PeftModel

            backbone_model = PeftModel.from_pretrained(backbone_model, str(adapter_dir), is_trainable=is_trainable)
        model = cls(config, backbone=backbone_model)
        state = load_checkpoint_weights(folder / CHECKPOINT_WEIGHTS_NAME)
        head_dtypes = {tensor.dtype for key, tensor in state.items() if key.startswith("quality_head.")}
        if len(head_dtypes) == 1:
            model.quality_head.to(dtype=head_dtypes.pop())
        model.quality_head.to(device=model._hidden_state_device())
        model._load_checkpoint_state(state, stored_backbone=stored_backbone)
        if device is not None:
            model.to(device)
        model.config.backbone_implementation = implementation
        model.config.backbone_dtype = _dtype_name(_parameter_dtype(model._raw_backbone()))
        model.eval()
        return model

    def _load_checkpoint_state(self, state: Dict[str, torch.Tensor], stored_backbone: bool) -> None:
        own = self.state_dict()
        unexpected = sorted(set(state) - set(own))
        if unexpected:
            raise ValueError(
                f"Checkpoint weights do not match this model: unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}."
            )
        # Missing keys are allowed only where the layout says so: the backbone when it is referenced, and
        # tensors that share storage with a stored one (tied weights).
        stored_ptrs = {(own[k].untyped_storage().data_ptr(), own[k].storage_offset(), tuple(own[k].shape)) for k in state}
        missing = []
        for key, tensor in own.items():
            if key in state:
                continue
            if key.startswith("backbone.") and (not stored_backbone or "lora_" in key):
                continue
            if (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape)) in stored_ptrs:
                continue
            missing.append(key)
        if missing:
            raise ValueError(f"Checkpoint is missing weights {missing[:5]}{'...' if len(missing) > 5 else ''}.")
        with torch.no_grad():
            params = dict(self.named_parameters(remove_duplicate=False))
            buffers = dict(self.named_buffers(remove_duplicate=False))
            for key, value in state.items():
                target = params.get(key, buffers.get(key))
                if target is None:
                    raise ValueError(f"Checkpoint key {key!r} is neither a parameter nor a buffer of the model.")
                target.copy_(value.to(dtype=target.dtype, device=target.device))


# ----- helpers ----------------------------------------------------------------------------------------
def load_checkpoint_weights(path: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """Read a checkpoint's ``model.safetensors``, with a clear error for a missing, empty, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise OSError(f"{str(path)!r} is missing: a PRISM checkpoint holds its head (and trained weights) there.")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise ValueError(
            f"{str(path)!r} is not a readable safetensors file ({type(err).__name__}: {err}); the checkpoint is damaged or "
            f"incomplete ({path.stat().st_size} bytes). Save it again, or download it again."
        ) from err


# Errors the published remote code of LLaDA and Dream raises under transformers 5 (see prism_hf.models).
_KNOWN_REMOTE_CODE_FAILURES = (
    "all_tied_weights_keys",
    "recompute_mapping",
    "use_cache",
    "ROPE_INIT_FUNCTIONS",
    "KeyError: 'default'",
    "_tied_weights_keys",
    "validate()",
)


def _check_implementation(backbone_implementation: str, trust_remote_code: Optional[bool]) -> None:
    from .configuration_prism import BACKBONE_IMPLEMENTATIONS

    if backbone_implementation not in BACKBONE_IMPLEMENTATIONS:
        raise ValueError(
            f"backbone_implementation={backbone_implementation!r} is not valid; choose one of "
            f"{list(BACKBONE_IMPLEMENTATIONS)} ('native': prism_hf's port where there is one; 'remote': the Hub's code)."
        )
    if backbone_implementation == "remote" and trust_remote_code is not True:
        raise ValueError(
            "backbone_implementation='remote' runs the Hub's published model code: pass trust_remote_code=True as well "
            "if you trust it (it is never turned on for you)."
        )


def _uses_remote_code(family: BackboneFamily, trust_remote_code: Optional[bool], backbone_implementation: str) -> bool:
    """Whether the backbone is (to be) built from remote code: never for a family with a native port unless the
    caller opted out with ``backbone_implementation="remote"``."""
    if family.native_class is not None:
        return backbone_implementation == "remote"
    return bool(trust_remote_code)


def _parameter_dtype(module: nn.Module) -> Optional[torch.dtype]:
    """The dtype of the module's first floating-point parameter (buffers such as RoPE tables are not counted)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), None)


def _dtype_name(dtype: Optional[torch.dtype]) -> Optional[str]:
    return None if dtype is None else str(dtype).replace("torch.", "")


def _as_torch_dtype(dtype: Any) -> Optional[torch.dtype]:
    """``torch.bfloat16``, ``"bfloat16"`` or ``"torch.bfloat16"`` -> ``torch.bfloat16``; ``None`` / ``"auto"`` -> ``None``."""
    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return None if dtype == "auto" else dtype
    value = getattr(torch, str(dtype).replace("torch.", ""), None) if isinstance(dtype, str) else None
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(
            f"dtype={dtype!r} is not a floating-point torch dtype; pass e.g. torch.bfloat16, 'bfloat16', 'float32' or 'auto'."
        )
    return value


def _single_device(device_map: Any, device: Any) -> Any:
    """A backbone stored in the checkpoint is built in this process: it accepts one device, not a sharding plan."""
    if device_map is None:
        return device
    if device_map == "auto":
        return device or ("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device_map, (str, torch.device, int)):
        return device or device_map
    raise ValueError(
        f"device_map={device_map!r}: this checkpoint stores its backbone's weights, which load on one device; pass "
        "device_map='cuda:0' (or device=). A sharding plan works for checkpoints whose backbone is loaded by reference."
    )


def _read_checkpoint_config(folder: Path, name_or_path: Any) -> Dict[str, Any]:
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{str(name_or_path)!r}: config.json is not valid JSON ({err}); the checkpoint is damaged.") from err
    if not isinstance(raw, dict) or raw.get("model_type") != PrismConfig.model_type:
        found = raw.get("model_type") if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(
            f"{str(name_or_path)!r} is not a PRISM checkpoint (model_type={found!r}). "
            "To wrap a plain backbone use PrismForMaskedDiffusion.from_backbone(...)."
        )
    version = raw.get("prism_format_version", 0)
    if version > PRISM_FORMAT_VERSION:
        raise ValueError(
            f"Checkpoint {str(name_or_path)!r} has prism_format_version={version}, newer than the "
            f"{PRISM_FORMAT_VERSION} this prism_hf reads. Upgrade prism_hf (pip install -U prism-hf)."
        )
    return raw


def _load_backbone(
    name_or_path: str, *, revision=None, trust_remote_code=False, backbone_implementation: str = "native", dtype=None,
    **load_kwargs,
) -> PreTrainedModel:
    """Load a backbone from the Hub or a folder with its family's Auto class.

    A family with a native port in ``prism_hf.models`` is loaded with it (``trust_remote_code`` is not needed and is
    not passed on, so the Hub's ``auto_map`` is never followed) unless ``backbone_implementation="remote"``.
    Weights load from safetensors unless the caller passes ``use_safetensors=False``.
    """
    import transformers
    from transformers import PretrainedConfig

    hub_kwargs = {k: load_kwargs[k] for k in ("cache_dir", "token", "local_files_only", "force_download") if k in load_kwargs}
    raw_config, _ = PretrainedConfig.get_config_dict(name_or_path, revision=revision, **hub_kwargs)
    family = get_family(raw_config.get("model_type") or "")
    remote = _uses_remote_code(family, trust_remote_code, backbone_implementation)
    if remote and not trust_remote_code:
        raise ValueError(
            f"The backbone {name_or_path!r} (model_type={raw_config.get('model_type')!r}) needs its remote code: pass "
            "trust_remote_code=True if you trust it (it is never turned on for you)."
        )
    torch_dtype = _as_torch_dtype(dtype)
    load_kwargs["dtype"] = torch_dtype if torch_dtype is not None else load_kwargs.get("dtype", "auto")
    load_kwargs.setdefault("use_safetensors", True)
    auto_cls = getattr(transformers, family.auto_class)
    folder = Path(name_or_path)
    if load_kwargs["use_safetensors"] and folder.is_dir() and not any(folder.glob("*.safetensors")) and (
        any(folder.glob("*.bin")) or any(folder.glob("*.pt"))
    ):
        raise OSError(
            f"{name_or_path!r} holds only pickle weights (*.bin / *.pt), which can run code when loaded; prism_hf loads "
            "backbones from safetensors. Convert them (save_pretrained writes safetensors), or, if you trust the file, "
            "pass use_safetensors=False explicitly."
        )
    try:
        if remote and family.native_class is not None:
            # The Auto classes prefer a registered local class (the native port) even with trust_remote_code=True, so
            # the opt-out fetches the published classes named in the folder's auto_map directly.
            config_cls, model_cls = _remote_code_classes(name_or_path, raw_config, family, revision=revision, **hub_kwargs)
            config = config_cls.from_pretrained(name_or_path, revision=revision, **hub_kwargs)
            return model_cls.from_pretrained(name_or_path, config=config, revision=revision, **load_kwargs)
        config = AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=remote, **hub_kwargs)
        return auto_cls.from_pretrained(name_or_path, config=config, revision=revision, trust_remote_code=remote, **load_kwargs)
    except (AttributeError, TypeError, KeyError) as err:
        text = f"{type(err).__name__}: {err}"
        if remote and family.native_class is not None and any(marker in text for marker in _KNOWN_REMOTE_CODE_FAILURES):
            raise RuntimeError(
                f"The published remote code of the {family.name!r} backbone {name_or_path!r} failed under transformers "
                f"{transformers.__version__} ({text}). That code predates transformers 5; prism_hf ships a native port, "
                f"{family.native_class}, which loads the same checkpoint: drop backbone_implementation='remote' (the "
                "default is 'native')."
            ) from err
        raise


def _remote_code_classes(name_or_path: str, raw_config: Dict[str, Any], family: BackboneFamily, revision=None, **hub_kwargs):
    """The config and model classes of the remote code named in a checkpoint's ``auto_map``."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    auto_map = raw_config.get("auto_map") or {}
    config_ref, model_ref = auto_map.get("AutoConfig"), auto_map.get(family.auto_class) or auto_map.get("AutoModel")
    if not config_ref or not model_ref:
        raise ValueError(
            f"backbone_implementation='remote', but the config of {name_or_path!r} names no remote code for AutoConfig and "
            f"{family.auto_class} in its auto_map ({auto_map}); use the native port (backbone_implementation='native')."
        )
    load = dict(revision=revision, **hub_kwargs)
    classes = get_class_from_dynamic_module(config_ref, name_or_path, **load), get_class_from_dynamic_module(model_ref, name_or_path, **load)
    _reregister_native(family)  # published code may register itself with the Auto classes on import (LLaDA's does)
    return classes


def _reregister_native(family: BackboneFamily) -> None:
    """Register the family's native classes with the Auto classes again, so that they keep serving its model_type."""
    import importlib

    import transformers

    module_name, class_name = family.native_class.rsplit(".", 1)
    model_cls = getattr(importlib.import_module(module_name), class_name)
    AutoConfig.register(model_cls.config_class.model_type, model_cls.config_class, exist_ok=True)
    getattr(transformers, family.auto_class).register(model_cls.config_class, model_cls, exist_ok=True)


def _backbone_from_config(
    config: PrismConfig, family: BackboneFamily, trust_remote_code: Optional[bool] = None,
    backbone_implementation: str = "native", **config_kwargs,
) -> PreTrainedModel:
    """Build an empty backbone of the recorded architecture (its weights come from the PRISM checkpoint)."""
    import transformers

    if not config.backbone_config:
        raise ValueError("PrismConfig.backbone_config is empty; cannot rebuild the backbone.")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    config_kwargs.pop("low_cpu_mem_usage", None)  # diffusers' loader passes it; nothing to stream for an empty model
    unsupported = sorted(set(config_kwargs) - {"attn_implementation"})
    if unsupported:
        raise TypeError(
            f"Unexpected keyword arguments {unsupported} for a checkpoint that stores its backbone's weights (only "
            "attn_implementation, dtype and a single device apply)."
        )
    backbone_dict = dict(config.backbone_config)
    model_type = backbone_dict.pop("model_type", config.backbone_family)
    auto_cls = getattr(transformers, family.auto_class)
    if model_type in CONFIG_MAPPING and not _uses_remote_code(family, trust_remote_code, backbone_implementation):
        return auto_cls.from_config(AutoConfig.for_model(model_type, **backbone_dict), **config_kwargs)
    # A remote-code family: its config class lives with the backbone reference, not in transformers.
    reference = config.backbone_name_or_path
    if reference is None:
        raise ValueError(
            f"Cannot rebuild a backbone of model_type={model_type!r}: transformers does not know it and the checkpoint "
            "records no backbone reference to fetch its code from. Register its config and model classes with "
            "AutoConfig/AutoModel first, or pass backbone= to from_pretrained."
        )
    if not trust_remote_code:
        raise ValueError(
            f"Rebuilding the {model_type!r} backbone needs its remote code from {reference!r}: pass trust_remote_code=True "
            "to from_pretrained if you trust it (it is never turned on for you)."
        )
    if family.native_class is not None:
        from transformers import PretrainedConfig

        raw_config, _ = PretrainedConfig.get_config_dict(reference, revision=config.backbone_revision)
        config_cls, model_cls = _remote_code_classes(reference, raw_config, family, revision=config.backbone_revision)
        backbone_config = config_cls.from_pretrained(reference, revision=config.backbone_revision)
    else:
        model_cls = None
        backbone_config = AutoConfig.from_pretrained(reference, revision=config.backbone_revision, trust_remote_code=True)
    for key, value in backbone_dict.items():
        if not key.startswith("_") and key not in ("auto_map", "architectures", "transformers_version"):
            setattr(backbone_config, key, value)
    if model_cls is not None:
        return model_cls._from_config(backbone_config, **config_kwargs)
    return auto_cls.from_config(backbone_config, trust_remote_code=True, **config_kwargs)

def _try_load_tokenizer(name_or_path: str, revision=None, trust_remote_code=False):
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except Exception as err:  # a missing tokenizer only matters if no mask id is found; that error says so
        logger.info("No tokenizer found at %s (%s); relying on the config for the mask token.", name_or_path, err)
        return None


def _resolve_checkpoint_folder(name_or_path, revision=None, **hub_kwargs) -> Path:
    path = Path(name_or_path)
    subfolder = hub_kwargs.pop("subfolder", None)
    if path.is_dir():
        folder = path / subfolder if subfolder else path
        if not (folder / "config.json").is_file():
            raise OSError(f"{str(folder)!r} has no config.json; is it a PRISM checkpoint saved with save_pretrained?")
        return folder
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(
            str(name_or_path),
            revision=revision,
            allow_patterns=[f"{subfolder + '/' if subfolder else ''}{p}" for p in ("config.json", CHECKPOINT_WEIGHTS_NAME, f"{ADAPTER_DIRNAME}/*", "README.md")],
            **hub_kwargs,
        )
    except Exception as err:
        raise OSError(
            f"{str(name_or_path)!r} is neither a local folder nor a reachable Hub repo ({type(err).__name__}: {err}). "
            "Check the path, or go online / pre-download the repo when HF_HUB_OFFLINE=1."
        ) from err
    return Path(local) / subfolder if subfolder else Path(local)


def _model_card(config: PrismConfig, saved_keys) -> str:
    base = config.backbone_name_or_path
    n_backbone = sum(k.startswith("backbone.") for k in saved_keys)
    contents = {
        "full": "the full fine-tuned backbone weights and the quality head",
        "lora": "the LoRA adapter (adapter/) and the quality head",
        "frozen": "the quality head only (the backbone is unchanged)",
    }[config.backbone_training]
    if base is None:
        contents = "the full backbone weights (no Hub reference) and the quality head"
    lines = [
        "---",
        "library_name: prism_hf",
        "tags:",
        "- prism",
        "- masked-diffusion",
        "- self-correction",
    ]
    if base:
        lines.append(f"base_model: {base}")
    lines += [
        "---",
        "",
        "# PRISM self-correcting masked diffusion model",
        "",
        "A [PRISM](https://arxiv.org/abs/2510.01384) checkpoint made with `prism_hf`: a masked diffusion backbone plus a "
        "per-token quality head that estimates Pr[token is right | rest of the sequence], used at inference to remask "
        "and revise low-quality tokens.",
        "",
        f"- Backbone: `{base or 'stored in this checkpoint'}`" + (f" (revision `{config.backbone_revision}`)" if config.backbone_revision else ""),
        f"- Backbone family: `{config.backbone_family}`; mask token id {config.mask_token_id}",
        f"- Backbone training: `{config.backbone_training}`",
        f"- Quality head: `{config.head_type}` {json.dumps(config.head_kwargs) if config.head_kwargs else ''}".rstrip(),
        f"- This checkpoint stores {contents} ({len(saved_keys)} tensors, {n_backbone} of them backbone tensors).",
    ]
    if config.recipe:
        lines += ["", "## Training recipe", "", "```json", json.dumps(config.recipe, indent=2, sort_keys=True, default=str), "```"]
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from prism_hf import PrismForMaskedDiffusion",
        "",
        "model = PrismForMaskedDiffusion.from_pretrained(\"<this repo or folder>\"" + (", trust_remote_code=True" if config.backbone_trust_remote_code else "") + ")",
        "```",
        "",
    ]
    return "\n".join(lines)
