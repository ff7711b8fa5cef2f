"""`PrismPipeline`: generate or infill with a masked diffusion model, with PRISM self-correction.

The sibling of diffusers' `LLaDA2Pipeline`: it holds a ``model`` (a [`PrismForMaskedDiffusion`] or a plain masked
diffusion backbone), a [`PrismScheduler`] and an optional ``tokenizer``, and saves / loads as a folder with
``model_index.json``.

Layout of a batch. Row ``i`` holds ``[prompt_i, gen_length masks, padding]``: each row's generation starts
right after its own prompt and the padding goes last (attention mask 0). Positions the model sees are then
the same as for that prompt alone, so a padded batch gives, row by row, what each prompt gives alone. A backbone
that takes no padding mask (MDLM) would attend to that padding, so for it the pipeline runs the prompts of each
length as their own batch.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import numbers
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Union

import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.utils import BaseOutput
from tqdm.auto import tqdm

from ..modeling.families import (
    UnknownFamilyError,
    aligned_logits,
    family_for_model,
    get_family,
    mask_token_id_for,
    max_length_of,
    vocab_size_of,
)
from ..utils.deprecation import warn_deprecated
from .remasking import LLADA_REMASKING_NAMES, llada_remasking_hint, quality_head_error
from .scheduling_prism import PrismScheduler

__all__ = ["PrismPipeline", "PrismPipelineOutput", "classifier_free_guidance"]

#: LLaDA ``generate`` arguments whose prism_hf name differs (the pipeline call says so instead of a bare TypeError).
_LLADA_CALL_ARGUMENTS = {
    "steps": "num_inference_steps (the total over all blocks, as LLaDA's `steps`)",
    "mask_id": "mask_token_id",
    "model": "the pipeline's `model` (PrismPipeline(model=..., scheduler=...))",
}
#: LLaDA ``generate`` options with no prism_hf counterpart yet.
_LLADA_UNSUPPORTED = ("logits_eos_inf", "confidence_eos_eot_inf")
#: ``from_pretrained`` keyword arguments that reach the model (and not diffusers' own component loader).
_MODEL_LOAD_KWARGS = ("trust_remote_code", "device_map", "attn_implementation")
#: Hub keyword arguments ``DiffusionPipeline.download`` takes.
_HUB_KWARGS = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision")


def classifier_free_guidance(cond: torch.Tensor, uncond: Optional[torch.Tensor], cfg_scale: float) -> torch.Tensor:
    """LLaDA's unsupervised classifier-free guidance, ``uncond + (cfg_scale + 1) * (cond - uncond)``, in float32.

    The one guidance formula of prism_hf (the pipeline's sampling steps and the lm-eval estimator use it).

    Args:
        cond (`torch.Tensor` of shape `(..., vocab_size)`): Logits of the input as it is.
        uncond (`torch.Tensor` of the same shape, *optional*): Logits of the input with its condition (prompt, given
            tokens) masked; `None` returns ``cond`` in float32.
        cfg_scale (`float`): The guidance scale; 0 returns ``cond``.

    Returns:
        `torch.FloatTensor`: The guided logits.
    """
    cond = cond.float()
    if uncond is None or cfg_scale == 0:
        return cond
    uncond = uncond.float()
    return uncond + (cfg_scale + 1.0) * (cond - uncond)


@dataclass
class PrismPipelineOutput(BaseOutput):
    """Output of [`PrismPipeline`].

    Args:
        sequences (`torch.LongTensor` of shape `(batch_size, gen_length)`, or `(batch_size, sequence_length)` when
            infilling): The generated tokens of each row (its prompt and padding left out), or, with
            ``gen_length=0``, the whole input with its masks filled.
        quality (`torch.FloatTensor` of the shape of ``sequences``, *optional*): Final per-token quality
            ``sigmoid(quality_logits)`` in ``[0, 1]`` of the returned tokens; `None` for a model without a head.
        nfe (`int`): Model forwards actually run (including the one that scores the final sequence).
        num_remasked (`torch.LongTensor` of shape `(batch_size,)`): Tokens remasked per row over the whole run.
        texts (`List[str]`, *optional*): Decoded ``sequences`` when a tokenizer is present and ``output_type="text"``.
        history (`List[Dict[str, Any]]`, *optional*): With ``return_history=True``, one entry per step: ``block``,
            ``step``, ``sample`` (tokens after the step, `(B, L)`), ``unmasked``, ``remasked`` (`(B, L)` bool) and
            ``quality`` (`(B, L)` quality of the tokens the step read, NaN where a cached step read none, or `None`),
            all on CPU.
        nfe_per_row (`torch.LongTensor` of shape `(batch_size,)`, *optional*): Forwards run while each row was still
            being decoded (with early stopping, by EOS or by ``confidence_threshold`` / ``quality_threshold``, a row
            finishes before the batch does); the final scoring forward included.
        tokens_processed (`int`): Tokens fed to the model over all forwards (rows times positions, the unconditional
            rows of guidance included). ``tokens_processed / nfe`` shows how much cheaper cached forwards are.
    """

    sequences: torch.LongTensor
    quality: Optional[torch.FloatTensor] = None
    nfe: int = 0
    num_remasked: Optional[torch.LongTensor] = None
    texts: Optional[List[str]] = None
    history: Optional[List[Dict[str, Any]]] = None
    nfe_per_row: Optional[torch.LongTensor] = None
    tokens_processed: int = 0


class PrismPipeline(DiffusionPipeline):
    r"""Masked diffusion sampling with PRISM remasking (or a baseline), block by block.

    Args:
        model: A [`PrismForMaskedDiffusion`] (logits and quality logits from one forward), or a plain masked
            diffusion model returning ``.logits`` (every rule that needs no quality head works with it).
        scheduler ([`PrismScheduler`]): The sampling rules and their knobs.
        tokenizer (*optional*): Needed for ``prompt`` / ``messages`` and to decode ``texts``; token-level tasks
            (Sudoku) work without one.

    Example:
        ```python
        >>> from prism_hf import PrismForMaskedDiffusion
        >>> from prism_hf.sampling import PrismPipeline
        >>> from prism_hf.sampling import PrismScheduler
        >>> from prism_hf.testing import tiny_llada
        >>> import torch

        >>> model = PrismForMaskedDiffusion.from_backbone(tiny_llada())
        >>> pipe = PrismPipeline(model=model, scheduler=PrismScheduler(remasking="prism", num_remask=2))
        >>> out = pipe(input_ids=torch.tensor([[5, 6, 7]]), gen_length=16, num_inference_steps=8, show_progress=False)
        >>> out.sequences.shape, out.nfe
        (torch.Size([1, 16]), 9)
        ```
    """

    # Saved and loaded when present (diffusers only writes components that are required or listed here).
    _optional_components = ["tokenizer"]

    model: Any
    scheduler: PrismScheduler
    tokenizer: Any

    _callback_tensor_inputs = ["sample", "unmasked", "remasked", "quality_logits", "logits", "token_confidence"]

    def __init__(self, model: Any, scheduler: PrismScheduler, tokenizer: Any = None):
        super().__init__()
        if isinstance(tokenizer, (list, tuple)) and (len(tokenizer) == 0 or tokenizer[0] is None):
            tokenizer = None  # a pipeline saved without a tokenizer loads it back as [None, None]
        self.register_modules(model=model, scheduler=scheduler, tokenizer=tokenizer)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], **kwargs):
        r"""Load a pipeline saved with ``save_pretrained`` (a folder or a Hub repository with ``model_index.json``).

        The model is loaded here, with the arguments that belong to it, and handed to diffusers' loader, which loads
        the scheduler and the tokenizer. Diffusers itself would pass the model neither ``trust_remote_code`` nor
        transformers' ``dtype`` spelling.

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`): The folder, or a Hub id (downloaded first).
            trust_remote_code (`bool`, *optional*): Passed to the model's ``from_pretrained`` (needed for a backbone
                whose code lives on the Hub) and to the tokenizer's.
            dtype (`torch.dtype` or `str`, *optional*): The model's dtype; ``torch_dtype`` is accepted as an alias.
            device_map (*optional*), attn_implementation (`str`, *optional*): Passed to the model's ``from_pretrained``.
            model (*optional*): An already loaded model to use instead (then the model arguments above do not apply).
            kwargs: Anything else goes to ``DiffusionPipeline.from_pretrained`` (``scheduler=``, ``tokenizer=``,
                Hub arguments such as ``revision``).
        """
        dtype, torch_dtype = kwargs.pop("dtype", None), kwargs.pop("torch_dtype", None)
        if dtype is not None and torch_dtype is not None and dtype != torch_dtype:
            raise ValueError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree; pass one of them (dtype).")
        model_kwargs = {name: kwargs.pop(name) for name in _MODEL_LOAD_KWARGS if name in kwargs}
        if dtype is not None or torch_dtype is not None:
            model_kwargs["dtype"] = dtype if dtype is not None else torch_dtype
        if kwargs.get("model") is not None:
            if model_kwargs:
                raise ValueError(
                    f"{sorted(model_kwargs)} apply to a model loaded from the folder, but model= was passed; load that "
                    "model with them instead."
                )
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        folder = Path(pretrained_model_name_or_path)
        if not folder.is_dir():
            folder = Path(cls.download(str(pretrained_model_name_or_path), **{k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}))
        index_file = folder / "model_index.json"
        if not index_file.is_file():
            raise ValueError(
                f"pretrained_model_name_or_path={str(pretrained_model_name_or_path)!r} has no model_index.json: it is not a "
                "saved pipeline (PrismPipeline.save_pretrained writes one). For a model checkpoint, load the model and "
                "build PrismPipeline(model=..., scheduler=PrismScheduler(...))."
            )
        index = json.loads(index_file.read_text())
        kwargs["model"] = _load_model_component(folder / "model", index.get("model"), model_kwargs)
        tokenizer_entry = index.get("tokenizer") or [None, None]
        if "trust_remote_code" in model_kwargs and tokenizer_entry[0] is not None and "tokenizer" not in kwargs:
            from transformers import AutoTokenizer

            kwargs["tokenizer"] = AutoTokenizer.from_pretrained(
                folder / "tokenizer", trust_remote_code=model_kwargs["trust_remote_code"]
            )
        return super().from_pretrained(folder, **kwargs)

    # ----- the model: the public seam (lm-eval and other callers run the model through these) -----------------
    @property
    def has_quality_head(self) -> bool:
        """Whether the model returns ``quality_logits`` (a PRISM model)."""
        return hasattr(self.model, "quality_head")

    def _family(self):
        """The backbone family (of the PRISM model or the plain backbone), or `None` for a model outside the
        registry."""
        try:
            return family_for_model(self.model)
        except UnknownFamilyError:
            return None

    @property
    def takes_padding_mask(self) -> bool:
        """Whether the model's forward honours a padding mask. Read from the family registry: a family whose
        convention passes no ``attention_mask`` (MDLM's DiT) attends to every position, padding included, so rows of
        different lengths must not share a batch."""
        family = self._family()
        if family is None:
            return True
        probe = torch.zeros(1, 1, dtype=torch.long)
        return "attention_mask" in family.backbone_inputs(probe, torch.ones_like(probe))

    @property
    def max_length(self) -> Optional[int]:
        """The longest sequence the model accepts (from its config; `None` when it does not say)."""
        return max_length_of(self.model)

    def resolve_mask_token_id(self, mask_token_id: Optional[int] = None) -> int:
        """The mask id: the argument, else what the model records, else the tokenizer's, else the backbone family's
        rule ([`~prism_hf.modeling.families.mask_token_id_for`])."""
        return mask_token_id_for(self.model, tokenizer=self.tokenizer, mask_token_id=mask_token_id)

    def _model_device(self) -> torch.device:
        try:
            return self._execution_device
        except AttributeError:  # a plain nn.Module model that diffusers cannot place
            param = next(self.model.parameters(), None)
            return torch.device("cpu") if param is None else param.device

    def model_forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, *,
                      quality_only: bool = False, cache: Any = None) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """One model forward: ``(logits, quality_logits)`` with position ``i`` describing token ``i``.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): Token ids.
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*): 1 for real tokens,
                0 for padding.
            quality_only (`bool`): PRISM models only: skip the vocabulary projection (``logits`` is then `None`).
            cache ([`~prism_hf.models.cache.BlockKVCache`], *optional*): With its window set, ``input_ids`` are the
                window's tokens, ``attention_mask`` is the padding mask of the whole sequence, and the outputs are
                the window's, unaligned (see ``BackboneFamily.window_for``).

        Returns:
            `(logits, quality_logits)`: `(batch_size, sequence_length, vocab_size)` float logits (`None` with
            ``quality_only``) and `(batch_size, sequence_length)` quality logits (`None` for a plain backbone).
        """
        if not self.has_quality_head:
            extra = {} if cache is None else {"cache": cache}
            return aligned_logits(self.model, input_ids, attention_mask, **extra), None
        extra = {"output_logits": False} if quality_only else {}
        if cache is not None:
            extra["cache"] = cache
        output = self.model(input_ids, attention_mask=attention_mask, **extra)
        return output.logits, output.quality_logits

    # ----- the private names of 0.1.0 (its `monte_carlo_loglikelihood` docstring told users to call `_forward`) -----
    def _forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], quality_only: bool = False,
                 cache: Any = None):
        """Deprecated: [`model_forward`]."""
        warn_deprecated("PrismPipeline._forward", "PrismPipeline.model_forward", "PrismPipeline")
        return self.model_forward(input_ids, attention_mask, quality_only=quality_only, cache=cache)

    def _max_length(self) -> Optional[int]:
        """Deprecated: the [`max_length`] property."""
        warn_deprecated("PrismPipeline._max_length()", "PrismPipeline.max_length", "PrismPipeline")
        return self.max_length

    def _takes_padding_mask(self) -> bool:
        """Deprecated: the [`takes_padding_mask`] property."""
        warn_deprecated("PrismPipeline._takes_padding_mask()", "PrismPipeline.takes_padding_mask", "PrismPipeline")
        return self.takes_padding_mask

    def guided_forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], condition: torch.Tensor,
                       mask_token_id: int, cfg_scale: float, cache: Any = None,
                       window: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor], int, int]:
        """The forward of one sampling step, with LLaDA's classifier-free guidance when ``cfg_scale > 0``.

        The unconditional input is ``input_ids`` with every ``condition`` position (prompt, given tokens) masked; both
        run as one forward of ``2B`` rows (counted as two forwards) and the logits are
        [`classifier_free_guidance`]'s. The quality logits are those of the conditional rows.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): The current tokens.
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*): The padding mask.
            condition (`torch.BoolTensor` of shape `(batch_size, sequence_length)`): What guidance masks.
            mask_token_id (`int`): The mask id.
            cfg_scale (`float`): 0 turns guidance off.
            cache ([`~prism_hf.models.cache.BlockKVCache`], *optional*): ``window=None`` runs the whole sequence and
                refills it.
            window (`torch.LongTensor` of shape `(batch_size, W)`, *optional*): Positions to run against the cached
                rest; the outputs are then the window's (unaligned).

        Returns:
            `(logits, quality_logits or None, forwards run, tokens processed)`.
        """
        inputs = input_ids
        if cfg_scale > 0:
            inputs = torch.cat([input_ids, input_ids.masked_fill(condition, mask_token_id)])
            attention_mask = None if attention_mask is None else attention_mask.repeat(2, 1)
            window = None if window is None else window.repeat(2, 1)
        if window is not None:
            inputs = inputs.gather(1, window)
        if cache is not None:
            cache.set_window(window)  # None: this forward runs the whole sequence and fills the cache
        logits, quality_logits = self.model_forward(inputs, attention_mask, cache=cache)
        if cfg_scale <= 0:
            return logits, quality_logits, 1, inputs.numel()
        cond, uncond = logits.chunk(2)
        rows = input_ids.shape[0]
        guided = classifier_free_guidance(cond, uncond, cfg_scale)
        return guided, None if quality_logits is None else quality_logits[:rows], 2, inputs.numel()

    def _block_cache(self):
        """A [`~prism_hf.models.cache.BlockKVCache`] for ``kv_cache`` "prefix" / "dual", or `None` for "none"; a clear
        error when the backbone has no cache."""
        mode = self.scheduler.config.kv_cache
        if mode == "none":
            return None
        raw = self.model._raw_backbone() if self.has_quality_head else self.model
        head = getattr(self.model, "quality_head", None)
        if head is not None and not getattr(head, "pointwise", True):
            raise ValueError(
                f"kv_cache={mode!r} with the {type(head).__name__} quality head: it attends across positions, so a cached "
                "step (which runs only a window) cannot score quality exactly. Use kv_cache='none' with this head, or a "
                "pointwise head ('mlp', 'linear')."
            )
        if not getattr(raw, "supports_block_kv_cache", False) or self._family() is None:
            raise ValueError(
                f"kv_cache={mode!r}, but the {type(raw).__name__} backbone has no block-decoding key/value cache (the "
                "native LLaDA and Dream ports have one; BERT-style models and MDLM do not). Use kv_cache='none' "
                "(PrismScheduler.from_config(pipe.scheduler.config, kv_cache='none'))."
            )
        from ..models.cache import BlockKVCache

        return BlockKVCache()

    # ----- inputs --------------------------------------------------------------------------------------------
    def _encode_prompts(self, prompt, messages, input_ids, attention_mask, chat_template_kwargs) -> List[torch.Tensor]:
        """The prompts as a list of 1D id tensors (real tokens only)."""
        if input_ids is not None:
            if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.long, torch.int, torch.int32):
                raise ValueError(f"input_ids must be a torch.LongTensor of token ids; got {type(input_ids).__name__} "
                                 f"{getattr(input_ids, 'dtype', '')}.")
            if input_ids.dim() == 1:
                input_ids = input_ids.unsqueeze(0)
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must have shape (batch, seq_len); got {tuple(input_ids.shape)}.")
            input_ids = input_ids.long()
            if attention_mask is None:
                return list(input_ids)
            if attention_mask.dim() == 1:
                attention_mask = attention_mask.unsqueeze(0)
            if attention_mask.shape != input_ids.shape:
                raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} must match input_ids shape "
                                 f"{tuple(input_ids.shape)}.")
            keep = attention_mask.bool()
            return [row[k] for row, k in zip(input_ids, keep)]
        if self.tokenizer is None:
            raise ValueError("prompt / messages need a tokenizer; this pipeline has none. Pass input_ids instead.")
        if messages is not None:
            conversations = [messages] if messages and isinstance(messages[0], dict) else list(messages)
            out = []
            for conversation in conversations:
                ids = self.tokenizer.apply_chat_template(
                    conversation, add_generation_prompt=True, tokenize=True, return_dict=False, **(chat_template_kwargs or {})
                )
                if isinstance(ids, dict) or hasattr(ids, "keys"):
                    ids = ids["input_ids"]
                out.append(torch.as_tensor(ids, dtype=torch.long).reshape(-1))
            return out
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        encoded = self.tokenizer(prompts, add_special_tokens=True)["input_ids"]
        return [torch.as_tensor(ids, dtype=torch.long) for ids in encoded]

    @staticmethod
    def _infill_inputs(input_ids, attention_mask, mask_id):
        if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.long, torch.int, torch.int32):
            raise ValueError(f"input_ids must be a torch.LongTensor of token ids; got {type(input_ids).__name__} "
                             f"{getattr(input_ids, 'dtype', '')}.")
        ids = input_ids.long()
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        if ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (batch, seq_len); got {tuple(input_ids.shape)}.")
        if attention_mask is None:
            valid = torch.ones_like(ids, dtype=torch.bool)
        else:
            valid = attention_mask.reshape(ids.shape).bool() if attention_mask.numel() == ids.numel() else None
            if valid is None:
                raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} must match input_ids shape "
                                 f"{tuple(ids.shape)}.")
        if not bool(((ids == mask_id) & valid).any()):
            raise ValueError(f"gen_length=0 infills mask tokens, but input_ids has no mask token ({mask_id}).")
        return ids, valid

    def check_inputs(self, prompt, messages, input_ids, gen_length, num_inference_steps, output_type,
                     callback_on_step_end_tensor_inputs, cfg_scale: float = 0.0) -> None:
        if isinstance(prompt, torch.Tensor):
            raise ValueError(
                "prompt is a tensor of token ids (LLaDA's generate takes `prompt` that way); pass it as input_ids=... "
                "(with attention_mask=... for a padded batch). `prompt` here is text, encoded with the tokenizer."
            )
        given = [name for name, value in (("prompt", prompt), ("messages", messages), ("input_ids", input_ids)) if value is not None]
        if not given:
            raise ValueError("Pass one of prompt, messages or input_ids.")
        if len(given) > 1:
            raise ValueError(f"Pass only one of prompt, messages or input_ids; got {given}.")
        if (prompt is not None and not isinstance(prompt, str) and len(prompt) == 0) or (messages is not None and len(messages) == 0):
            raise ValueError(f"{given[0]}=[] is an empty batch; pass at least one prompt.")
        if isinstance(input_ids, torch.Tensor) and input_ids.dim() == 2 and input_ids.shape[0] == 0:
            raise ValueError(f"input_ids of shape {tuple(input_ids.shape)} is an empty batch; pass at least one row.")
        if isinstance(gen_length, bool) or not isinstance(gen_length, int) or gen_length < 0:
            raise ValueError(f"gen_length={gen_length!r} must be an int >= 0 (0 infills the mask tokens of input_ids).")
        if gen_length == 0 and input_ids is None:
            raise ValueError("gen_length=0 infills the mask tokens of input_ids; pass input_ids (with mask tokens).")
        if num_inference_steps is not None and (
            isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1
        ):
            raise ValueError(f"num_inference_steps={num_inference_steps!r} must be an int >= 1.")
        if output_type not in ("text", "seq"):
            raise ValueError(f"output_type={output_type!r} is not valid; choose 'text' or 'seq'.")
        if isinstance(cfg_scale, bool) or not isinstance(cfg_scale, numbers.Real) or not math.isfinite(cfg_scale) or cfg_scale < 0:
            raise ValueError(
                f"cfg_scale={cfg_scale!r} is not valid; it must be a finite number >= 0 (0 = no classifier-free guidance; "
                "LLaDA's formula: logits = uncond + (cfg_scale + 1) * (cond - uncond))."
            )
        bad = [k for k in (callback_on_step_end_tensor_inputs or []) if k not in self._callback_tensor_inputs]
        if bad:
            raise ValueError(f"callback_on_step_end_tensor_inputs has {bad}; valid: {self._callback_tensor_inputs}.")
        rule = self.scheduler.remasking_rule
        if rule.needs_quality and not self.has_quality_head:
            raise quality_head_error(rule.name, f"a quality head, but the model ({type(self.model).__name__}) has none")
        if rule.name == "confidence" and not self.has_quality_head:
            warnings.warn(
                "remasking='confidence' on a model without a quality head remasks already unmasked tokens whose "
                "unmasking probability was lowest (ReMDM-conf with PRISM's counts, a self-correction baseline). It is "
                "not LLaDA's remasking='low_confidence': that is unmasking='confidence' with remasking='none' here.",
                UserWarning,
                stacklevel=3,
            )

    @staticmethod
    def _reject_unknown_arguments(kwargs: Dict[str, Any]) -> None:
        """A clear error for arguments the call does not take, naming prism_hf's equivalent (LLaDA's ``generate``
        names, scheduler settings passed to the call)."""
        if not kwargs:
            return
        scheduler_fields = set(inspect.signature(PrismScheduler.__init__).parameters) - {"self"}
        messages = []
        for name, value in kwargs.items():
            if name == "remasking" and isinstance(value, str) and value in LLADA_REMASKING_NAMES:
                messages.append(f"remasking={value!r}: {llada_remasking_hint(value)} The pipeline call takes no `remasking`.")
            elif name in _LLADA_CALL_ARGUMENTS:
                messages.append(f"{name}={value!r}: LLaDA's `{name}` is {_LLADA_CALL_ARGUMENTS[name]} here.")
            elif name in _LLADA_UNSUPPORTED:
                messages.append(f"{name}={value!r}: LLaDA's `{name}` has no prism_hf counterpart; leave it out.")
            elif name in scheduler_fields:
                messages.append(
                    f"{name}={value!r} is a sampling setting of the scheduler, not of the call: "
                    f"pipe.scheduler = PrismScheduler.from_config(pipe.scheduler.config, {name}={value!r})."
                )
            else:
                messages.append(f"{name}={value!r} is not an argument of PrismPipeline.__call__.")
        raise TypeError("PrismPipeline got unexpected arguments. " + " ".join(messages) + " See docs/sampling.md, "
                        "'Coming from LLaDA's generate.py'.")

    def _check_token_ids(self, rows: List[torch.Tensor], what: str) -> None:
        """Every id inside the model's vocabulary (an id outside it would fail deep inside the embedding lookup)."""
        ids = torch.cat([row.reshape(-1) for row in rows]) if rows else torch.zeros(0, dtype=torch.long)
        vocab = vocab_size_of(self.model)
        bad = (ids < 0) | (ids >= vocab) if vocab is not None else ids < 0
        if bool(bad.any()):
            first = int(bad.nonzero()[0, 0])
            row = int((torch.cumsum(torch.tensor([r.numel() for r in rows]), 0) <= first).sum())
            raise ValueError(
                f"{what} row {row} holds token id {int(ids[first])}, outside the model's vocabulary "
                f"(valid ids: 0..{'?' if vocab is None else vocab - 1})."
            )

    # ----- sampling ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt: Union[str, List[str], None] = None,
        messages: Optional[Union[List[Dict[str, str]], List[List[Dict[str, str]]]]] = None,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.LongTensor] = None,
        gen_length: int = 128,
        num_inference_steps: Optional[int] = None,
        block_length: Optional[int] = None,
        mask_token_id: Optional[int] = None,
        eos_token_id: Optional[int] = None,
        eos_early_stop: bool = False,
        cfg_scale: float = 0.0,
        generator: Optional[torch.Generator] = None,
        output_type: str = "text",
        return_dict: bool = True,
        return_quality: bool = True,
        return_history: bool = False,
        show_progress: Optional[bool] = None,
        callback_on_step_end: Union[Callable[..., Dict[str, Any]], PipelineCallback, MultiPipelineCallbacks, None] = None,
        callback_on_step_end_tensor_inputs: Optional[List[str]] = None,
        chat_template_kwargs: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> Union[PrismPipelineOutput, tuple]:
        """Generate ``gen_length`` tokens after each prompt, or (``gen_length=0``) fill the masks of ``input_ids``.

        Args:
            prompt (`str` or `List[str]`, *optional*): Text prompt(s); needs a tokenizer.
            messages (`List[dict]` or `List[List[dict]]`, *optional*): One chat or a batch of chats, encoded with the
                tokenizer's chat template (generation prompt added).
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*): Prompt ids, or with
                ``gen_length=0`` a partly filled sequence whose mask tokens are to be filled (Sudoku: blanks).
            attention_mask (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*): 1 for real
                tokens, 0 for padding (left or right; prompts are re-laid out so that padding goes last).
            gen_length (`int`, defaults to 128): Tokens to generate per row; 0 infills.
            num_inference_steps (`int`, *optional*): Schedule steps in total, shared out among the blocks (at least
                one per block). Defaults to one token per step (``gen_length``, or the most masks of a row).
                PRISM-loop steps (``scheduler.config.prism_loop_steps`` per block) come on top.
            block_length (`int`, *optional*): Semi-autoregressive block length; must divide ``gen_length`` (or the
                sequence length when infilling). Defaults to the scheduler's ``block_length``, else one block.
            mask_token_id (`int`, *optional*): Overrides the model's mask id.
            eos_token_id (`int`, *optional*): Defaults to the tokenizer's.
            eos_early_stop (`bool`): A row whose generation has an EOS with no mask before it is finished: it stops
                changing and the rest of its generation is set to EOS; the run stops when every row is finished.
            cfg_scale (`float`, defaults to 0.0): Classifier-free guidance as in LLaDA's ``generate``: each step also
                runs the model on the sequence with its prompt (every position not being generated) masked, and uses
                ``uncond + (cfg_scale + 1) * (cond - uncond)`` as logits. Both run as one forward of twice the batch,
                counted as two in ``nfe``. 0 turns it off.
            generator (`torch.Generator`, *optional*): RNG for sampling and the random rules.
            output_type (`str`, defaults to `"text"`): `"text"` also decodes ``texts`` (with a tokenizer); `"seq"`
                returns ids only.
            return_dict (`bool`): Return a [`PrismPipelineOutput`]; otherwise the tuple
                ``(sequences, quality, nfe, num_remasked, texts)``.
            return_quality (`bool`, defaults to `True`): With a quality head, run one more forward to score the final
                tokens (counted in ``nfe``).
            return_history (`bool`): Keep every step's tokens, unmasked / remasked positions and quality.
            show_progress (`bool`, *optional*): Show a tqdm bar; defaults to ``set_progress_bar_config``.
            callback_on_step_end (*optional*): Called as ``callback(pipe, global_step, timestep, callback_kwargs)``
                after every step; ``callback_kwargs`` holds the tensors named in
                ``callback_on_step_end_tensor_inputs`` (default ``["sample"]``); a returned ``"sample"`` replaces the
                tokens.
            callback_on_step_end_tensor_inputs (`List[str]`, *optional*): Subset of ``_callback_tensor_inputs``.
                ``sample``, ``unmasked``, ``remasked`` and ``token_confidence`` always cover the whole sequence;
                ``logits`` and ``quality_logits`` cover what the step read: the block's columns, or, at the cached
                steps of ``kv_cache="prefix"`` / ``"dual"``, each row's window (its own positions).
            chat_template_kwargs (`dict`, *optional*): Passed to ``apply_chat_template``.

        Sampling settings (``temperature``, ``top_p``, the rules, ...) live on the scheduler; LLaDA's ``generate``
        names (``steps``, ``mask_id``, ``remasking``, ...) raise an error that names the prism_hf equivalent.

        A backbone without a padding mask (MDLM) attends to padding, so prompts of different lengths are run as one
        batch per length (each row then gets what it gets alone); ``nfe`` sums their forwards, callbacks run per
        batch, and history entries carry a ``rows`` key with the batch's row indices.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["sample"]
        self._reject_unknown_arguments(kwargs)
        self.check_inputs(prompt, messages, input_ids, gen_length, num_inference_steps, output_type,
                          callback_on_step_end_tensor_inputs, cfg_scale=cfg_scale)
        mask_id = self.resolve_mask_token_id(mask_token_id)
        if eos_token_id is None and self.tokenizer is not None:
            eos_token_id = getattr(self.tokenizer, "eos_token_id", None)
        if gen_length == 0:
            canvas = self._infill_canvas(input_ids, attention_mask, mask_id)
        else:
            prompts = self._checked_prompts(prompt, messages, input_ids, attention_mask, gen_length, mask_id,
                                            chat_template_kwargs)
            lengths = [int(p.numel()) for p in prompts]
            if len(set(lengths)) > 1 and not self.takes_padding_mask:
                return self._generate_by_length(prompts, lengths, return_dict=return_dict, output_type=output_type,
                                                call_kwargs=dict(
                    gen_length=gen_length, num_inference_steps=num_inference_steps, block_length=block_length,
                    mask_token_id=mask_id, eos_token_id=eos_token_id, eos_early_stop=eos_early_stop, cfg_scale=cfg_scale,
                    generator=generator, return_quality=return_quality, return_history=return_history,
                    show_progress=show_progress, callback_on_step_end=callback_on_step_end,
                    callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs))
            canvas = self._prompt_canvas(prompts, lengths, gen_length, mask_id)
        blocks = self._plan_blocks(canvas, num_inference_steps, block_length)
        state = self._denoise(canvas, blocks, mask_id, eos_token_id if eos_early_stop else None, cfg_scale, generator,
                              _StepHooks(show_progress, return_history, callback_on_step_end,
                                         callback_on_step_end_tensor_inputs))
        return self._decode_outputs(canvas, state, eos_token_id if eos_early_stop else None, return_quality,
                                    output_type, return_dict)

    # ----- the stages of a call ------------------------------------------------------------------------------
    def _infill_canvas(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], mask_id: int) -> "_Canvas":
        """Infilling (``gen_length=0``) keeps the caller's layout (Sudoku grids come back cell for cell): the masks
        of ``input_ids`` are the generated positions."""
        ids, valid = self._infill_inputs(input_ids, attention_mask, mask_id)
        self._check_token_ids(list(ids), "input_ids")
        family = self._family()
        first_valid = valid.long().argmax(-1, keepdim=True)  # the first real token of each row
        if family is not None and family.logits_shift and bool(
                (valid.gather(1, first_valid) & (ids.gather(1, first_valid) == mask_id)).any()):
            raise ValueError(
                f"input_ids has a mask token at the first real position of a row, but the {family.name!r} backbone "
                "predicts token i from position i - 1 (its logits are shifted): that position has no prediction of "
                "its own (before it there is only padding, or nothing). Keep a real token (e.g. BOS) there."
            )
        if not bool(valid.all()) and not self.takes_padding_mask:
            raise ValueError(
                "attention_mask marks padding, but this backbone takes no padding mask (it would attend to the "
                "padding and change every row's result). Infill rows of one length without padding."
            )
        batch_size, seq_len = ids.shape
        gen_pos = torch.arange(seq_len)[None, :].expand(batch_size, -1)
        return _Canvas.on(self._model_device(), x=ids, valid=valid, generated=valid & (ids == mask_id), gen_pos=gen_pos,
                          lengths=[seq_len], gen_length=0, mask_id=mask_id)

    def _checked_prompts(self, prompt, messages, input_ids, attention_mask, gen_length: int, mask_id: int,
                         chat_template_kwargs) -> List[torch.Tensor]:
        """The prompts as 1D id tensors (real tokens only), checked: no mask token, ids inside the vocabulary, no
        empty prompt for a shifted family."""
        prompts = self._encode_prompts(prompt, messages, input_ids, attention_mask, chat_template_kwargs)
        if len(prompts) == 0:
            raise ValueError("The batch is empty; pass at least one prompt.")
        has_mask = [bool((p == mask_id).any()) for p in prompts]
        if any(has_mask):
            raise ValueError(
                f"input_ids rows {[i for i, m in enumerate(has_mask) if m]} contain the mask token {mask_id} while "
                f"gen_length={gen_length}; pass gen_length=0 to infill those masks."
            )
        self._check_token_ids(prompts, "input_ids" if input_ids is not None else "the encoded prompt")
        family = self._family()
        lengths = [int(p.numel()) for p in prompts]
        if family is not None and family.logits_shift and min(lengths) == 0:
            raise ValueError(
                f"An empty prompt (row {lengths.index(0)}) with a {family.name!r} backbone: it predicts token i from "
                "position i - 1 (its logits are shifted), so position 0 has no prediction of its own. Start every "
                "prompt with at least one token (e.g. BOS)."
            )
        return prompts

    def _prompt_canvas(self, prompts: List[torch.Tensor], lengths: List[int], gen_length: int, mask_id: int) -> "_Canvas":
        """Row ``i`` is ``[prompt_i, gen_length masks, padding]``: each generation starts right after its own prompt
        and padding goes last, so every row sees the positions it would see alone."""
        batch_size, seq_len = len(prompts), max(lengths) + gen_length
        pad_id = getattr(self.tokenizer, "pad_token_id", None) if self.tokenizer is not None else None
        x = torch.full((batch_size, seq_len), mask_id if pad_id is None else pad_id, dtype=torch.long)
        for i, p in enumerate(prompts):  # setup only: one copy per prompt, never inside a step
            x[i, : lengths[i]] = p
        gen_pos = torch.arange(seq_len)[None, :] - torch.tensor(lengths)[:, None]
        generated = (gen_pos >= 0) & (gen_pos < gen_length)
        return _Canvas.on(self._model_device(), x=x.masked_fill(generated, mask_id), valid=gen_pos < gen_length,
                          generated=generated, gen_pos=gen_pos, lengths=lengths, gen_length=gen_length, mask_id=mask_id)

    def _plan_blocks(self, canvas: "_Canvas", num_inference_steps: Optional[int], block_length: Optional[int]) -> "_Blocks":
        """Check the canvas against the model's maximum length, and share the steps out among the blocks."""
        max_length = self.max_length
        if max_length is not None and canvas.seq_len > max_length:
            raise ValueError(
                f"The longest prompt has {max(canvas.lengths)} tokens; with gen_length={canvas.gen_length} that is "
                f"{canvas.seq_len} positions, more than the model's maximum {max_length}. Shorten the prompt to at most "
                f"{max_length - canvas.gen_length} tokens or lower gen_length."
            )
        gen_total = canvas.gen_total
        if block_length is None:
            block_length = self.scheduler.config.block_length or gen_total
        if not isinstance(block_length, int) or block_length < 1 or gen_total % block_length != 0:
            what = "the sequence length" if canvas.infill else "gen_length"
            raise ValueError(f"block_length={block_length!r} must be a positive divisor of {what} ({gen_total}).")
        num_blocks = gen_total // block_length
        self.scheduler.check_block_length(block_length)
        if num_inference_steps is None:
            num_inference_steps = int(canvas.generated.sum(-1).max()) if canvas.infill else canvas.gen_length
            num_inference_steps = max(num_inference_steps, num_blocks)
        if num_inference_steps < num_blocks:
            raise ValueError(
                f"num_inference_steps={num_inference_steps} is fewer than the {num_blocks} blocks "
                f"(gen_length {gen_total} / block_length {block_length}); every block needs at least one step."
            )
        base_steps, extra_steps = divmod(num_inference_steps, num_blocks)
        return _Blocks(block_length, [base_steps + (1 if b < extra_steps else 0) for b in range(num_blocks)])

    def _block_views(self, canvas: "_Canvas", block: int, block_length: int, cached: bool):
        """How the steps of ``block`` read the sequence: ``(columns, window_view, model_window, out_index)``.

        Uncached steps (and a cached block's first step) read the columns that hold this block in some row (a view, no
        copy: the prompt and later blocks cost the sampler nothing). Later steps of a cached block read the tokens of
        the block (``kv_cache="dual"``) or of the block and what follows (``"prefix"``), at their own positions in each
        row, and the model runs the window that predicts them (``window_view`` and the rest are `None` without a
        cache).
        """
        lengths = canvas.lengths if not canvas.infill else [0]
        columns = _ColumnView(block * block_length + min(lengths), (block + 1) * block_length + max(lengths))
        if not cached:
            return columns, None, None, None
        width = block_length if self.scheduler.config.kv_cache == "dual" else canvas.gen_total - block * block_length
        starts = canvas.lengths_t.to(canvas.x.device) * (not canvas.infill) + block * block_length
        token_positions = starts[:, None] + torch.arange(width, device=canvas.x.device)
        model_window, out_index = self._family().window_for(token_positions, canvas.seq_len)
        return columns, _GatherView(token_positions), model_window, out_index

    def _denoise(self, canvas: "_Canvas", blocks: "_Blocks", mask_id: int, eos_token_id: Optional[int],
                 cfg_scale: float, generator: Optional[torch.Generator], hooks: "_StepHooks") -> "_DenoisingState":
        """The denoising loop: the blocks in order, each for its planned steps (fewer when it finishes early)."""
        cache = self._block_cache()
        state = _DenoisingState.start(canvas, hooks.return_history)
        progress_config = dict(getattr(self, "_progress_bar_config", {}) or {})
        if hooks.show_progress is not None:
            progress_config["disable"] = not hooks.show_progress
        total_steps = sum(blocks.steps) + len(blocks.steps) * self.scheduler.num_loop_steps
        progress = tqdm(total=total_steps, **progress_config)
        for block, steps in enumerate(blocks.steps):
            self.scheduler.set_timesteps(steps, device=canvas.x.device)
            self._denoise_block(state, canvas, block, blocks.block_length, cache, mask_id, eos_token_id, cfg_scale,
                                generator, hooks, progress)
            if state.stopped:
                break
        progress.close()
        return state

    def _denoise_block(self, state: "_DenoisingState", canvas: "_Canvas", block: int, block_length: int, cache: Any,
                       mask_id: int, eos_token_id: Optional[int], cfg_scale: float,
                       generator: Optional[torch.Generator], hooks: "_StepHooks", progress) -> None:
        """The steps of one block; a block ends early when every row is done (parallel or quality-guided decoding)
        and the run stops when every row has finished at its EOS (``eos_token_id`` is `None` without early stop)."""
        scheduler = self.scheduler
        block_mask = canvas.generated & (canvas.block_of(block_length) == block)
        columns, window_view, model_window, out_index = self._block_views(canvas, block, block_length, cache is not None)
        block_done = torch.zeros_like(state.finished)
        num_steps = len(scheduler.timesteps)
        for timestep in range(num_steps):
            view = columns if window_view is None or timestep == 0 else window_view
            frozen = block_done | state.finished if eos_token_id is not None else block_done
            logits, quality_logits = self._read_forward(state, canvas, view, frozen, mask_id, cfg_scale, cache,
                                                        None if view is columns else model_window, out_index)
            current, in_block = view.read(state.x), view.read(block_mask)
            if scheduler.config.quality_threshold is not None:
                # The forward just run scored the current tokens: a row whose block is full and good enough is done.
                block_done |= scheduler.blocks_done(current, in_block, mask_id, quality_logits)
                frozen = block_done | state.finished if eos_token_id is not None else block_done
                if bool(frozen.all()):
                    progress.update(num_steps - timestep)
                    return
            step_output = scheduler.step(
                logits, timestep, current, mask_token_id=mask_id, quality_logits=quality_logits,
                maskable=in_block & ~frozen[:, None], token_confidence=view.read(state.token_confidence),
                generator=generator,
            )
            self._apply_step(state, view, step_output, logits, quality_logits, block, timestep, hooks)
            progress.update(1)
            if eos_token_id is not None:
                state.finished = state.finished | self._finished_rows(state.x, canvas.generated, canvas.gen_pos, mask_id,
                                                                      eos_token_id)
                if bool(state.finished.all()):
                    state.stopped = True
                    return
            if scheduler.is_adaptive and scheduler.config.quality_threshold is None:
                block_done |= ~((state.x == mask_id) & block_mask).any(-1)  # parallel decoding: a full block is done
                if bool((block_done | state.finished).all()):
                    progress.update(num_steps - timestep - 1)
                    return

    def _read_forward(self, state: "_DenoisingState", canvas: "_Canvas", view, frozen: torch.Tensor, mask_id: int,
                      cfg_scale: float, cache: Any, model_window: Optional[torch.Tensor],
                      out_index: Optional[torch.Tensor]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Run the step's forward and return the logits and quality logits of the positions ``view`` reads; count
        the forwards (per row while it is not frozen) and the tokens processed."""
        logits, quality_logits, forwards, tokens = self.guided_forward(
            state.x, canvas.model_attention, canvas.condition, mask_id, cfg_scale, cache=cache, window=model_window)
        state.nfe += forwards
        state.tokens_processed += tokens
        state.row_nfe += forwards * (~frozen).long()
        if model_window is None:
            return view.read(logits), None if quality_logits is None else view.read(quality_logits)
        # the window's outputs that describe its tokens (one position earlier for a shifted family)
        logits = logits.gather(1, out_index[..., None].expand(-1, -1, logits.shape[-1]))
        return logits, None if quality_logits is None else quality_logits.gather(1, out_index)

    def _apply_step(self, state: "_DenoisingState", view, step_output, logits: torch.Tensor,
                    quality_logits: Optional[torch.Tensor], block: int, timestep: int, hooks: "_StepHooks") -> None:
        """Write the step's tokens back into the whole sequence; record the history and run the callback."""
        sample = view.write(state.x, step_output.prev_sample)
        state.token_confidence = view.write(state.token_confidence, step_output.token_confidence)
        state.num_remasked += step_output.num_remasked
        if state.history is not None or hooks.callback is not None:
            shape, device = state.x.shape, state.x.device
            unmasked = view.write(torch.zeros(shape, dtype=torch.bool, device=device), step_output.unmasked)
            remasked = view.write(torch.zeros(shape, dtype=torch.bool, device=device), step_output.remasked)
        if state.history is not None:
            step_quality = None
            if quality_logits is not None:
                step_quality = view.write(torch.full(shape, float("nan"), device=device),
                                          torch.sigmoid(quality_logits.float())).cpu()
            state.history.append({"block": block, "step": timestep, "sample": sample.cpu(), "unmasked": unmasked.cpu(),
                                  "remasked": remasked.cpu(), "quality": step_quality})
        if hooks.callback is not None:
            available = {"sample": sample, "unmasked": unmasked, "remasked": remasked, "quality_logits": quality_logits,
                         "logits": logits, "token_confidence": state.token_confidence}
            callback_kwargs = {k: available[k] for k in hooks.tensor_inputs}
            callback_outputs = hooks.callback(self, state.global_step, timestep, callback_kwargs) or {}
            sample = callback_outputs.pop("sample", sample)
        state.x = sample
        state.global_step += 1

    def _decode_outputs(self, canvas: "_Canvas", state: "_DenoisingState", eos_token_id: Optional[int],
                        return_quality: bool, output_type: str, return_dict: bool):
        """Fill after EOS, score the final tokens' quality (one more forward), cut each row's generation out of the
        canvas and decode it."""
        x = state.x
        if eos_token_id is not None:
            x = self._fill_after_eos(x, canvas.generated, canvas.gen_pos, canvas.mask_id, eos_token_id, state.finished)
        quality = None
        if return_quality and self.has_quality_head:
            _, final_quality_logits = self.model_forward(x, canvas.model_attention, quality_only=True)
            state.nfe += 1
            state.tokens_processed += x.numel()
            state.row_nfe += 1
            quality = torch.sigmoid(final_quality_logits.float())
        sequences = x
        if not canvas.infill:
            index = canvas.lengths_t.to(x.device)[:, None] + torch.arange(canvas.gen_length, device=x.device)[None, :]
            sequences = x.gather(1, index)
            quality = None if quality is None else quality.gather(1, index)
        texts = None
        if output_type == "text" and self.tokenizer is not None:
            texts = self.tokenizer.batch_decode(sequences, skip_special_tokens=True)
        self.maybe_free_model_hooks()
        if not return_dict:
            return sequences, quality, state.nfe, state.num_remasked, texts
        return PrismPipelineOutput(
            sequences=sequences, quality=quality, nfe=state.nfe, num_remasked=state.num_remasked, texts=texts,
            history=state.history, nfe_per_row=state.row_nfe, tokens_processed=state.tokens_processed,
        )

    # ----- helpers -------------------------------------------------------------------------------------------
    def _generate_by_length(self, prompts: List[torch.Tensor], lengths: List[int], *, return_dict: bool,
                            output_type: str, call_kwargs: Dict[str, Any]):
        """Run the prompts of each length as their own (unpadded) batch and put the rows back in order."""
        groups: Dict[int, List[int]] = {}
        for row, length in enumerate(lengths):
            groups.setdefault(length, []).append(row)
        batch_size, gen_length = len(prompts), call_kwargs["gen_length"]
        sequences = quality = num_remasked = nfe_per_row = None
        history: Optional[List[Dict[str, Any]]] = [] if call_kwargs["return_history"] else None
        nfe = tokens_processed = 0
        for rows in groups.values():
            out = self(input_ids=torch.stack([prompts[i] for i in rows]), output_type="seq", return_dict=True, **call_kwargs)
            index = torch.tensor(rows, device=out.sequences.device)
            if sequences is None:
                sequences = out.sequences.new_zeros((batch_size, gen_length))
                num_remasked = out.num_remasked.new_zeros(batch_size)
                nfe_per_row = out.nfe_per_row.new_zeros(batch_size)
            sequences[index] = out.sequences
            num_remasked[index] = out.num_remasked
            nfe_per_row[index] = out.nfe_per_row
            tokens_processed += out.tokens_processed
            if out.quality is not None:
                quality = out.quality.new_zeros((batch_size, gen_length)) if quality is None else quality
                quality[index] = out.quality
            if history is not None:
                history.extend({**entry, "rows": rows} for entry in out.history)
            nfe += out.nfe
        texts = None
        if output_type == "text" and self.tokenizer is not None:
            texts = self.tokenizer.batch_decode(sequences, skip_special_tokens=True)
        if not return_dict:
            return sequences, quality, nfe, num_remasked, texts
        return PrismPipelineOutput(
            sequences=sequences, quality=quality, nfe=nfe, num_remasked=num_remasked, texts=texts, history=history,
            nfe_per_row=nfe_per_row, tokens_processed=tokens_processed,
        )

    @staticmethod
    def _first_eos(x, generated, gen_pos, eos_token_id):
        hit = (x == eos_token_id) & generated
        far = torch.iinfo(torch.long).max
        first = torch.where(hit, gen_pos, torch.full_like(gen_pos, far)).min(-1).values
        return hit.any(-1), first

    def _finished_rows(self, x, generated, gen_pos, mask_id, eos_token_id) -> torch.Tensor:
        has_eos, first = self._first_eos(x, generated, gen_pos, eos_token_id)
        masked_before = ((x == mask_id) & generated & (gen_pos < first[:, None])).any(-1)
        return has_eos & ~masked_before

    def _fill_after_eos(self, x, generated, gen_pos, mask_id, eos_token_id, finished) -> torch.Tensor:
        _, first = self._first_eos(x, generated, gen_pos, eos_token_id)
        after = generated & finished[:, None] & (gen_pos > first[:, None])
        return x.masked_fill(after, eos_token_id)


def _load_model_component(model_dir: Path, entry: Optional[List[Optional[str]]], model_kwargs: Dict[str, Any]):
    """Load the pipeline's ``model`` folder with the class ``model_index.json`` names; a class whose module cannot
    be imported by name (remote code) is loaded through its backbone family's Auto class."""
    library, class_name = (list(entry) + [None, None])[:2] if entry else (None, None)
    if library is None or not model_dir.is_dir():
        raise ValueError(f"The saved pipeline has no model (model_index.json: model={entry!r}, folder {str(model_dir)!r}).")
    model_cls = None
    try:
        model_cls = getattr(importlib.import_module(library), class_name)
    except (ImportError, AttributeError):
        pass
    if model_cls is None or not hasattr(model_cls, "from_pretrained"):
        import transformers

        config = transformers.AutoConfig.from_pretrained(model_dir, trust_remote_code=model_kwargs.get("trust_remote_code"))
        try:
            auto_name = get_family(config.model_type).auto_class
        except UnknownFamilyError:
            auto_name = "AutoModel"
        model_cls = getattr(transformers, auto_name)
    return model_cls.from_pretrained(model_dir, **model_kwargs)


class _ColumnView:
    """A step's view of the sequence: the columns ``lo:hi`` (uncached steps, and the first step of a cached block)."""

    def __init__(self, lo: int, hi: int):
        self.lo, self.hi = lo, hi

    def read(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[:, self.lo : self.hi]

    def write(self, full: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
        out = full.clone()
        out[:, self.lo : self.hi] = part
        return out


class _GatherView:
    """A step's view of the sequence: given positions per row, `(B, W)` (cached steps, rows of different lengths)."""

    def __init__(self, positions: torch.Tensor):
        self.positions = positions

    def read(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.gather(1, self.positions)

    def write(self, full: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
        return full.scatter(1, self.positions, part.to(full.dtype))


@dataclass
class _Canvas:
    """The batch laid out for sampling, on the model's device (see [`PrismPipeline`]'s layout)."""

    x: torch.Tensor  # (B, S) tokens, the generated positions masked
    valid: torch.Tensor  # (B, S) real tokens (not padding)
    generated: torch.Tensor  # (B, S) the positions to generate
    gen_pos: torch.Tensor  # (B, S) position within each row's generation (negative in the prompt)
    lengths: List[int]  # prompt lengths ([sequence length] when infilling)
    lengths_t: torch.Tensor  # (B,) prompt lengths on CPU (zeros when infilling)
    gen_length: int  # 0 when infilling
    mask_id: int
    model_attention: Optional[torch.Tensor]  # the padding mask the model gets (None without padding)
    condition: torch.Tensor  # (B, S) prompt / given tokens: what classifier-free guidance masks

    @classmethod
    def on(cls, device, *, x, valid, generated, gen_pos, lengths, gen_length, mask_id) -> "_Canvas":
        lengths_t = torch.zeros(x.shape[0], dtype=torch.long) if gen_length == 0 else torch.tensor(lengths)
        x, valid, generated, gen_pos = x.to(device), valid.to(device), generated.to(device), gen_pos.to(device)
        return cls(x=x, valid=valid, generated=generated, gen_pos=gen_pos, lengths=lengths, lengths_t=lengths_t,
                   gen_length=gen_length, mask_id=mask_id, model_attention=None if bool(valid.all()) else valid.long(),
                   condition=valid & ~generated)

    @property
    def infill(self) -> bool:
        return self.gen_length == 0

    @property
    def batch_size(self) -> int:
        return self.x.shape[0]

    @property
    def seq_len(self) -> int:
        return self.x.shape[1]

    @property
    def gen_total(self) -> int:
        """Generated positions per row: ``gen_length``, or the sequence length when infilling."""
        return self.seq_len if self.infill else self.gen_length

    def block_of(self, block_length: int) -> torch.Tensor:
        """`(B, S)`: the block each position belongs to."""
        return torch.div(self.gen_pos.clamp(min=0), block_length, rounding_mode="floor")


class _Blocks(NamedTuple):
    block_length: int
    steps: List[int]  # schedule steps of each block


class _StepHooks(NamedTuple):
    show_progress: Optional[bool]
    return_history: bool
    callback: Any
    tensor_inputs: List[str]


@dataclass
class _DenoisingState:
    """What the denoising loop carries from step to step."""

    x: torch.Tensor
    token_confidence: torch.Tensor
    num_remasked: torch.Tensor
    finished: torch.Tensor
    row_nfe: torch.Tensor
    history: Optional[List[Dict[str, Any]]]
    nfe: int = 0
    tokens_processed: int = 0
    global_step: int = 0
    stopped: bool = False

    @classmethod
    def start(cls, canvas: _Canvas, return_history: bool) -> "_DenoisingState":
        device, rows = canvas.x.device, canvas.batch_size
        return cls(x=canvas.x, token_confidence=torch.zeros(canvas.x.shape, device=device),
                   num_remasked=torch.zeros(rows, dtype=torch.long, device=device),
                   finished=torch.zeros(rows, dtype=torch.bool, device=device),
                   row_nfe=torch.zeros(rows, dtype=torch.long, device=device), history=[] if return_history else None)
