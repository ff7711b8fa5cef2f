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
from typing import Any, Callable, Dict, List, Optional, Union

import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.utils import BaseOutput
from tqdm.auto import tqdm

from ..modeling.families import UnknownFamilyError, family_for_model, get_family, resolve_mask_token_id, vocab_size_of
from .remasking import LLADA_REMASKING_NAMES, llada_remasking_hint, quality_head_error
from .scheduling_prism import PrismScheduler

__all__ = ["PrismPipeline", "PrismPipelineOutput"]

_MAX_LENGTH_ATTRS = ("max_position_embeddings", "max_sequence_length", "model_length", "n_positions", "max_seq_len")

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

    # ----- model plumbing ------------------------------------------------------------------------------------
    @property
    def has_quality_head(self) -> bool:
        """Whether the model returns ``quality_logits`` (a PRISM model)."""
        return hasattr(self.model, "quality_head")

    def _plain_family(self):
        if self.has_quality_head:
            return None
        try:
            return family_for_model(self.model)
        except UnknownFamilyError:
            return None

    def _family(self):
        """The backbone family (PRISM model or plain backbone), or `None` for a model outside the registry."""
        family = getattr(self.model, "family", None) if self.has_quality_head else self._plain_family()
        return family if hasattr(family, "backbone_inputs") else None

    def _takes_padding_mask(self) -> bool:
        """Whether the model's forward honours a padding mask. Read from the family registry: a family whose
        convention passes no ``attention_mask`` (MDLM's DiT) attends to every position, padding included."""
        family = self._family()
        if family is None:
            return True
        probe = torch.zeros(1, 1, dtype=torch.long)
        return "attention_mask" in family.backbone_inputs(probe, torch.ones_like(probe))

    def _vocab_size(self) -> Optional[int]:
        configs = [getattr(getattr(self.model, "backbone", None), "config", None), getattr(self.model, "config", None)]
        for config in configs:
            if config is not None:
                size = vocab_size_of(config)
                if size is not None:
                    return size
        return None

    def resolve_mask_token_id(self, mask_token_id: Optional[int] = None) -> int:
        """The mask id: the argument, else the model's, else the backbone family's rule or the tokenizer's."""
        if mask_token_id is not None:
            return int(mask_token_id)
        found = getattr(self.model, "mask_token_id", None)
        if found is None:
            found = getattr(getattr(self.model, "config", None), "mask_token_id", None)
        if found is None:
            family = self._plain_family()
            if family is not None:
                try:
                    found = resolve_mask_token_id(family, self.model.config, tokenizer=self.tokenizer)
                except ValueError:
                    found = None
        if found is None and self.tokenizer is not None:
            found = getattr(self.tokenizer, "mask_token_id", None)
        if found is None:
            raise ValueError(
                "mask_token_id=None: no mask token id is known. The model (and its config) has no `mask_token_id` and "
                "the tokenizer has no mask token. Pass `mask_token_id=<id>` to the pipeline call."
            )
        return int(found)

    def _model_device(self) -> torch.device:
        try:
            return self._execution_device
        except AttributeError:  # a plain nn.Module model that diffusers cannot place
            param = next(self.model.parameters(), None)
            return torch.device("cpu") if param is None else param.device

    def _max_length(self) -> Optional[int]:
        configs = [getattr(self.model, "config", None)]
        backbone = getattr(self.model, "backbone", None)
        if backbone is not None:
            configs.insert(0, getattr(backbone, "config", None))
        for config in configs:
            for attr in _MAX_LENGTH_ATTRS:
                value = getattr(config, attr, None)
                if isinstance(value, int) and value > 0:
                    return value
        return None

    def _forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor], quality_only: bool = False,
                 cache: Any = None):
        """One model forward; returns ``(logits, quality_logits or None)`` with position ``i`` describing token ``i``.
        ``quality_only`` (PRISM models only) skips the vocabulary projection and returns ``logits=None``. With a
        ``cache`` whose window is set, ``input_ids`` are the window's tokens, ``attention_mask`` is the padding mask of
        the whole sequence, and the outputs are the window's, unaligned (see ``BackboneFamily.window_for``)."""
        if self.has_quality_head:
            extra = {"output_logits": False} if quality_only else {}
            if cache is not None:
                extra["cache"] = cache
            output = self.model(input_ids, attention_mask=attention_mask, **extra)
            return output.logits, output.quality_logits
        family = self._plain_family()
        if cache is not None:
            window = cache.window is not None
            inputs = family.window_inputs(input_ids, attention_mask, cache) if window else {
                **family.backbone_inputs(input_ids, attention_mask), "cache": cache}
            output = self.model(**inputs)
            logits = getattr(output, family.logits_attr, None)
            logits = output[0] if logits is None else logits
            return (logits if window else family.align(logits)), None
        if family is None:
            inputs = {"input_ids": input_ids}
            if attention_mask is not None:
                inputs["attention_mask"] = attention_mask
            output = self.model(**inputs)
            logits = getattr(output, "logits", None)
            return (output[0] if logits is None else logits), getattr(output, "quality_logits", None)
        output = self.model(**family.backbone_inputs(input_ids, attention_mask))
        logits = getattr(output, family.logits_attr, None)
        if logits is None:
            logits = output[0]
        return family.align(logits), getattr(output, "quality_logits", None)

    def _sampling_forward(self, x, attention_mask, condition, mask_id: int, cfg_scale: float, cache: Any = None,
                          window: Optional[torch.Tensor] = None):
        """The forward of one sampling step: ``(logits, quality_logits or None, forwards run, tokens processed)``.

        With a ``cache`` (kv_cache "prefix" / "dual"), ``window=None`` runs the whole sequence and refills the cache;
        a ``window`` `(B, W)` of positions runs only those tokens against the cached rest, and the outputs are the
        window's (unaligned).

        With ``cfg_scale > 0`` this is LLaDA's classifier-free guidance: the unconditional input is ``x`` with every
        condition position (prompt, given tokens) masked, both run as one forward of ``2B`` rows, and the logits are
        ``uncond + (cfg_scale + 1) * (cond - uncond)`` (float32). That forward counts twice in the NFE (it costs two).
        The quality logits are those of the conditional input.
        """
        inputs = x
        if cfg_scale > 0:
            inputs = torch.cat([x, x.masked_fill(condition, mask_id)])  # the unconditional rows: prompt masked
            attention_mask = None if attention_mask is None else attention_mask.repeat(2, 1)
            window = None if window is None else window.repeat(2, 1)
        if window is not None:
            inputs = inputs.gather(1, window)
        if cache is not None:
            cache.set_window(window)  # None: this forward runs the whole sequence and fills the cache
        logits, quality_logits = self._forward(inputs, attention_mask, cache=cache)
        if cfg_scale <= 0:
            return logits, quality_logits, 1, inputs.numel()
        cond, uncond = logits.float().chunk(2)
        guided = uncond + (cfg_scale + 1.0) * (cond - uncond)
        return guided, None if quality_logits is None else quality_logits[: x.shape[0]], 2, inputs.numel()

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
        vocab = self._vocab_size()
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
        if callback_on_step_end_tensor_inputs is None:
            callback_on_step_end_tensor_inputs = ["sample"]
        self._reject_unknown_arguments(kwargs)
        self.check_inputs(prompt, messages, input_ids, gen_length, num_inference_steps, output_type,
                          callback_on_step_end_tensor_inputs, cfg_scale=cfg_scale)
        mask_id = self.resolve_mask_token_id(mask_token_id)
        family = self._family()
        shifted = family is not None and family.logits_shift
        if eos_token_id is None and self.tokenizer is not None:
            eos_token_id = getattr(self.tokenizer, "eos_token_id", None)
        device = self._model_device()
        scheduler = self.scheduler
        infill = gen_length == 0

        # ----- lay out the batch -----
        if infill:
            # Infilling keeps the caller's layout (Sudoku grids come back cell for cell).
            infill_ids, infill_valid = self._infill_inputs(input_ids, attention_mask, mask_id)
            self._check_token_ids(list(infill_ids), "input_ids")
            batch_size, seq_len = infill_ids.shape
            lengths = [seq_len]
            gen_total = seq_len
            first_valid = infill_valid.long().argmax(-1, keepdim=True)  # the first real token of each row
            if shifted and bool((infill_valid.gather(1, first_valid) & (infill_ids.gather(1, first_valid) == mask_id)).any()):
                raise ValueError(
                    f"input_ids has a mask token at the first real position of a row, but the {family.name!r} backbone "
                    "predicts token i from position i - 1 (its logits are shifted): that position has no prediction of "
                    "its own (before it there is only padding, or nothing). Keep a real token (e.g. BOS) there."
                )
            if not bool(infill_valid.all()) and not self._takes_padding_mask():
                raise ValueError(
                    "attention_mask marks padding, but this backbone takes no padding mask (it would attend to the "
                    "padding and change every row's result). Infill rows of one length without padding."
                )
        else:
            prompts = self._encode_prompts(prompt, messages, input_ids, attention_mask, chat_template_kwargs)
            batch_size = len(prompts)
            if batch_size == 0:
                raise ValueError("The batch is empty; pass at least one prompt.")
            lengths = [int(p.numel()) for p in prompts]
            has_mask = [bool((p == mask_id).any()) for p in prompts]
            if any(has_mask):
                raise ValueError(
                    f"input_ids rows {[i for i, m in enumerate(has_mask) if m]} contain the mask token {mask_id} while "
                    f"gen_length={gen_length}; pass gen_length=0 to infill those masks."
                )
            self._check_token_ids(prompts, "input_ids" if input_ids is not None else "the encoded prompt")
            if shifted and min(lengths) == 0:
                raise ValueError(
                    f"An empty prompt (row {lengths.index(0)}) with a {family.name!r} backbone: it predicts token i from "
                    "position i - 1 (its logits are shifted), so position 0 has no prediction of its own. Start every "
                    "prompt with at least one token (e.g. BOS)."
                )
            if len(set(lengths)) > 1 and not self._takes_padding_mask():
                return self._generate_by_length(
                    prompts, lengths, return_dict=return_dict, output_type=output_type,
                    call_kwargs=dict(
                        gen_length=gen_length, num_inference_steps=num_inference_steps, block_length=block_length,
                        mask_token_id=mask_id, eos_token_id=eos_token_id, eos_early_stop=eos_early_stop,
                        cfg_scale=cfg_scale, generator=generator, return_quality=return_quality,
                        return_history=return_history, show_progress=show_progress,
                        callback_on_step_end=callback_on_step_end,
                        callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
                    ),
                )
            seq_len = max(lengths) + gen_length
            gen_total = gen_length
        max_length = self._max_length()
        if max_length is not None and seq_len > max_length:
            raise ValueError(
                f"The longest prompt has {max(lengths)} tokens; with gen_length={gen_length} that is {seq_len} positions, "
                f"more than the model's maximum {max_length}. Shorten the prompt to at most {max_length - gen_length} "
                "tokens or lower gen_length."
            )
        if block_length is None:
            block_length = scheduler.config.block_length or gen_total
        if not isinstance(block_length, int) or block_length < 1 or gen_total % block_length != 0:
            what = "the sequence length" if infill else "gen_length"
            raise ValueError(f"block_length={block_length!r} must be a positive divisor of {what} ({gen_total}).")
        num_blocks = gen_total // block_length
        scheduler.check_block_length(block_length)

        pad_id = getattr(self.tokenizer, "pad_token_id", None) if self.tokenizer is not None else None
        pad_id = mask_id if pad_id is None else pad_id
        positions = torch.arange(seq_len)
        if infill:
            x, valid = infill_ids, infill_valid
            generated = valid & (x == mask_id)
            gen_pos = positions[None, :].expand(batch_size, -1)
            lengths_t = torch.zeros(batch_size, dtype=torch.long)
        else:
            x = torch.full((batch_size, seq_len), pad_id, dtype=torch.long)
            for i, p in enumerate(prompts):  # setup only: one copy per prompt, never inside a step
                x[i, : lengths[i]] = p
            lengths_t = torch.tensor(lengths)
            gen_pos = positions[None, :] - lengths_t[:, None]
            generated = (gen_pos >= 0) & (gen_pos < gen_length)
            x = x.masked_fill(generated, mask_id)
            valid = gen_pos < gen_length
        x = x.to(device)
        valid, generated, gen_pos = valid.to(device), generated.to(device), gen_pos.to(device)
        model_attention = None if bool(valid.all()) else valid.long()
        condition = valid & ~generated  # prompt / given tokens: what classifier-free guidance masks
        block_of = torch.div(gen_pos.clamp(min=0), block_length, rounding_mode="floor")

        if num_inference_steps is None:
            num_inference_steps = int(generated.sum(-1).max()) if infill else gen_length
            num_inference_steps = max(num_inference_steps, num_blocks)
        if num_inference_steps < num_blocks:
            raise ValueError(
                f"num_inference_steps={num_inference_steps} is fewer than the {num_blocks} blocks "
                f"(gen_length {gen_total} / block_length {block_length}); every block needs at least one step."
            )
        base_steps, extra_steps = divmod(num_inference_steps, num_blocks)
        block_steps = [base_steps + (1 if b < extra_steps else 0) for b in range(num_blocks)]
        total_steps = sum(block_steps) + num_blocks * scheduler.num_loop_steps

        # ----- sample -----
        cache = self._block_cache()
        token_confidence = torch.zeros(x.shape, device=device)
        num_remasked = torch.zeros(batch_size, dtype=torch.long, device=device)
        finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
        row_nfe = torch.zeros(batch_size, dtype=torch.long, device=device)
        use_eos = eos_early_stop and eos_token_id is not None
        history: Optional[List[Dict[str, Any]]] = [] if return_history else None
        nfe = 0
        tokens_processed = 0
        global_step = 0
        progress_config = dict(getattr(self, "_progress_bar_config", {}) or {})
        if show_progress is not None:
            progress_config["disable"] = not show_progress
        progress = tqdm(total=total_steps, **progress_config)
        stopped = False
        for block in range(num_blocks):
            scheduler.set_timesteps(block_steps[block], device=device)
            block_mask = generated & (block_of == block)
            # The step only reads the columns that hold this block in some row (a view, no copy): the prompt
            # and later blocks cost the sampler nothing.
            lo = block * block_length + min(lengths) * (not infill)
            hi = (block + 1) * block_length + max(lengths) * (not infill)
            columns = _ColumnView(lo, hi)
            window_view = model_window = out_index = None
            if cache is not None:
                # Later steps of the block read the tokens of the block (dual) or of the block and what follows
                # (prefix), at their own positions in each row; the model runs the window that predicts them.
                width = block_length if scheduler.config.kv_cache == "dual" else gen_total - block * block_length
                starts = lengths_t.to(device) * (not infill) + block * block_length
                token_positions = starts[:, None] + torch.arange(width, device=device)
                window_view = _GatherView(token_positions)
                model_window, out_index = family.window_for(token_positions, seq_len)
            block_done = torch.zeros(batch_size, dtype=torch.bool, device=device)
            for timestep in range(len(scheduler.timesteps)):
                view = columns if window_view is None or timestep == 0 else window_view
                frozen = block_done | finished if use_eos else block_done
                logits, quality_logits, forwards, tokens = self._sampling_forward(
                    x, model_attention, condition, mask_id, cfg_scale, cache=cache,
                    window=None if view is columns else model_window,
                )
                nfe += forwards
                tokens_processed += tokens
                row_nfe += forwards * (~frozen).long()
                if view is columns:
                    logits, quality_logits = view.read(logits), None if quality_logits is None else view.read(quality_logits)
                else:  # the window's outputs that describe its tokens (one position earlier for a shifted family)
                    logits = logits.gather(1, out_index[..., None].expand(-1, -1, logits.shape[-1]))
                    quality_logits = None if quality_logits is None else quality_logits.gather(1, out_index)
                current, in_block = view.read(x), view.read(block_mask)
                if scheduler.config.quality_threshold is not None:
                    # The forward just run scored the current tokens: a row whose block is full and good enough is done.
                    block_done |= scheduler.blocks_done(current, in_block, mask_id, quality_logits)
                    frozen = block_done | finished if use_eos else block_done
                    if bool(frozen.all()):
                        progress.update(len(scheduler.timesteps) - timestep)
                        break
                step_output = scheduler.step(
                    logits,
                    timestep,
                    current,
                    mask_token_id=mask_id,
                    quality_logits=quality_logits,
                    maskable=in_block & ~frozen[:, None],
                    token_confidence=view.read(token_confidence),
                    generator=generator,
                )
                sample = view.write(x, step_output.prev_sample)
                token_confidence = view.write(token_confidence, step_output.token_confidence)
                num_remasked += step_output.num_remasked
                if history is not None or callback_on_step_end is not None:
                    unmasked = view.write(torch.zeros(x.shape, dtype=torch.bool, device=device), step_output.unmasked)
                    remasked = view.write(torch.zeros(x.shape, dtype=torch.bool, device=device), step_output.remasked)
                if history is not None:
                    step_quality = None
                    if quality_logits is not None:
                        step_quality = view.write(torch.full(x.shape, float("nan"), device=device), torch.sigmoid(quality_logits.float()))
                    history.append(
                        {
                            "block": block,
                            "step": timestep,
                            "sample": sample.cpu(),
                            "unmasked": unmasked.cpu(),
                            "remasked": remasked.cpu(),
                            "quality": None if step_quality is None else step_quality.cpu(),
                        }
                    )
                if callback_on_step_end is not None:
                    available = {
                        "sample": sample, "unmasked": unmasked, "remasked": remasked, "quality_logits": quality_logits,
                        "logits": logits, "token_confidence": token_confidence,
                    }
                    callback_kwargs = {k: available[k] for k in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, global_step, timestep, callback_kwargs) or {}
                    sample = callback_outputs.pop("sample", sample)
                x = sample
                global_step += 1
                progress.update(1)
                if use_eos:
                    finished = finished | self._finished_rows(x, generated, gen_pos, mask_id, eos_token_id)
                    if bool(finished.all()):
                        stopped = True
                        break
                if scheduler.is_adaptive and scheduler.config.quality_threshold is None:
                    block_done |= ~((x == mask_id) & block_mask).any(-1)  # parallel decoding: a full block is done
                    if bool((block_done | finished).all()):
                        progress.update(len(scheduler.timesteps) - timestep - 1)
                        break
            if stopped:
                break
        progress.close()

        if use_eos:
            x = self._fill_after_eos(x, generated, gen_pos, mask_id, eos_token_id, finished)
        quality = None
        if return_quality and self.has_quality_head:
            _, final_quality_logits = self._forward(x, model_attention, quality_only=True)
            nfe += 1
            tokens_processed += x.numel()
            row_nfe += 1
            quality = torch.sigmoid(final_quality_logits.float())

        # ----- outputs -----
        if infill:
            sequences = x
        else:
            index = lengths_t.to(device)[:, None] + torch.arange(gen_length, device=device)[None, :]
            sequences = x.gather(1, index)
            quality = None if quality is None else quality.gather(1, index)
        texts = None
        if output_type == "text" and self.tokenizer is not None:
            texts = self.tokenizer.batch_decode(sequences, skip_special_tokens=True)
        self.maybe_free_model_hooks()
        if not return_dict:
            return sequences, quality, nfe, num_remasked, texts
        return PrismPipelineOutput(
            sequences=sequences, quality=quality, nfe=nfe, num_remasked=num_remasked, texts=texts, history=history,
            nfe_per_row=row_nfe, tokens_processed=tokens_processed,
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
