"""Trainers: [`MDMTrainer`] (plain masked diffusion) and [`PrismTrainer`] (PRISM self-correction fine-tuning).

Both are `transformers.Trainer` subclasses: distributed training, mixed precision, gradient accumulation,
checkpointing and logging integrations work as usual. The loss math lives in [`prism_hf.training.losses`]; the
trainers only move batches into it and bookkeep metrics.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Any, Dict, List, Optional

import torch
from torch import nn
from transformers import Trainer, TrainingArguments
from transformers.utils import logging

from ..modeling.checkpointing import is_peft_model, restore_training_checkpoint
from ..modeling.families import MAX_LENGTH_ATTRS, aligned_logits, mask_token_id_for, max_length_of
from ..modeling.modeling_prism import PrismForMaskedDiffusion
from ..utils.distributed import destroy_process_group_at_exit
from .collator import MaskedDiffusionCollator
from .losses import binary_auroc, forward_mask, mdm_loss, prism_step, quality_accuracy
from .training_args import MaskedDiffusionTrainingArguments, PrismTrainingArguments

logger = logging.get_logger(__name__)

__all__ = ["MDMTrainer", "PrismTrainer", "model_max_length"]

#: Config attributes that hold a model's longest sequence (kept for old imports; the list lives in families).
_MAX_LENGTH_ATTRS = MAX_LENGTH_ATTRS
#: Batch keys produced by [`MaskedDiffusionCollator`] or read by it; kept when unused columns are removed.
_COLLATOR_COLUMNS = ("input_ids", "attention_mask", "maskable", "prompt_length", "labels")


def _backbone_config(model: nn.Module) -> Any:
    if isinstance(model, PrismForMaskedDiffusion):
        return model._raw_backbone().config
    return getattr(model, "config", None)


def model_max_length(model: nn.Module) -> Optional[int]:
    """Longest sequence the model accepts, from its (backbone's) config; ``None`` when the config does not say
    ([`~prism_hf.modeling.families.max_length_of`])."""
    return max_length_of(model)


def _config_attr(model: nn.Module, name: str) -> Optional[int]:
    for config in (getattr(model, "config", None), _backbone_config(model)):
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


class MDMTrainer(Trainer):
    """Plain masked diffusion training (pre-training or fine-tuning) with the ordinary loss.

    Works on any model that maps ``input_ids`` to an output with ``.logits`` `(B, L, V)`: a plain masked LM
    (``BertForMaskedLM``), a registered diffusion backbone (LLaDA, Dream, MDLM: called with its family's inputs and
    its logits re-aligned, [`~prism_hf.modeling.families.aligned_logits`]), or a [`PrismForMaskedDiffusion`] (whose
    head is then untouched by the loss).

    Each step masks the batch with [`forward_mask`] (``t ~ U(mask_eps, 1)``, only ``maskable`` positions) and
    minimises [`mdm_loss`] (cross-entropy at masked positions, weighted ``1/t``, normalised by ``B*L``).

    Args:
        model (`nn.Module`): The model to train.
        args ([`MaskedDiffusionTrainingArguments`] or `TrainingArguments`, *optional*): Plain
            `TrainingArguments` work too (``mask_eps=1e-3``, ``antithetic=False`` then apply).
        data_collator (*optional*): Defaults to a [`MaskedDiffusionCollator`] padding with the tokenizer's pad id
            (else the config's, else the mask id: padded positions are neither attended to nor masked).
        mask_token_id (`int`, *optional*): The mask token id; defaults to what the model's config records, then the
            family's rule (MDLM: the last vocabulary id), then the ``processing_class``'s ``mask_token_id``
            ([`~prism_hf.modeling.families.mask_token_id_for`]).
        Other arguments: as for `transformers.Trainer`.
    """

    _default_args_class = MaskedDiffusionTrainingArguments

    def __init__(
        self,
        model: Optional[nn.Module] = None,
        args: Optional[TrainingArguments] = None,
        data_collator: Optional[Any] = None,
        train_dataset: Optional[Any] = None,
        eval_dataset: Optional[Any] = None,
        processing_class: Optional[Any] = None,
        *,
        mask_token_id: Optional[int] = None,
        **kwargs,
    ):
        if model is None:
            raise ValueError(f"{type(self).__name__} needs a model (model=None was given).")
        if args is None:
            args = self._default_args_class(output_dir="trainer_output")
        self.mask_token_id = self._resolve_mask_token_id(model, mask_token_id, processing_class)
        self.max_length = model_max_length(model)
        user_max = getattr(args, "max_length", None)
        if user_max is not None and self.max_length is not None and user_max > self.max_length:
            raise ValueError(
                f"max_length={user_max} is larger than the model's maximum sequence length {self.max_length}."
            )
        if user_max is not None:
            self.max_length = user_max
        for name, dataset in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
            _check_dataset_columns(name, dataset)
        if data_collator is None:
            data_collator = MaskedDiffusionCollator.for_model(  # never masks position 0 of a shifted family (Dream)
                model,
                pad_token_id=self._resolve_pad_token_id(model, processing_class),
                max_length=self.max_length,
                truncation=bool(getattr(args, "truncation", False)),
                mask_padding=bool(getattr(args, "mask_padding", False)),
                return_has_maskable=not isinstance(train_dataset, torch.utils.data.IterableDataset),
            )
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        if self.args.world_size > 1:
            destroy_process_group_at_exit()  # gloo's threads would otherwise abort a finished rank at exit
        # Our losses are means over the micro-batch: let Trainer divide by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self._metrics: Dict[str, Dict[str, List[torch.Tensor]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._skipped_batches = 0
        self._rng_position = (None, None, 0)

    def _step_generator(self, model: nn.Module, device: torch.device) -> torch.Generator:
        """A fresh generator for the masking and proposal draws of this micro-batch.

        Its seed is a hash of ``(args.seed, train/eval, global step, micro-batch index, process index)``: every
        process draws different masks (the global RNG is seeded identically on all ranks), and a resumed run
        draws exactly what the uninterrupted run drew, with no generator state to checkpoint.
        """
        mode = "train" if model.training else "eval"
        step = self.state.global_step
        last_mode, last_step, count = self._rng_position
        count = count + 1 if (mode, step) == (last_mode, last_step) else 0
        self._rng_position = (mode, step, count)
        key = f"{self.args.seed}/{mode}/{step}/{count}/{self.accelerator.process_index}".encode()
        seed = int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & ((1 << 63) - 1)
        return torch.Generator(device=device).manual_seed(seed)

    # ----- set-up helpers -------------------------------------------------------------------------------
    @staticmethod
    def _resolve_mask_token_id(model: nn.Module, mask_token_id: Optional[int], processing_class: Any) -> int:
        """The argument, else what the model records, else the tokenizer's, else its family's rule
        ([`~prism_hf.modeling.families.mask_token_id_for`])."""
        return mask_token_id_for(model, tokenizer=processing_class, mask_token_id=mask_token_id)

    def _resolve_pad_token_id(self, model: nn.Module, processing_class: Any) -> int:
        pad = getattr(processing_class, "pad_token_id", None) if processing_class is not None else None
        if pad is None:
            pad = _config_attr(model, "pad_token_id")
        # Padded positions are excluded from attention and from masking, so any id works as filler; the
        # mask id is always a valid one.
        return self.mask_token_id if pad is None else int(pad)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns = list(dict.fromkeys([*self._signature_columns, *_COLLATOR_COLUMNS]))

    # ----- forward / loss -------------------------------------------------------------------------------
    def _check_batch(self, inputs: Dict[str, Any]) -> None:
        if "input_ids" not in inputs:
            raise ValueError(
                f"The batch has no `input_ids` (keys: {sorted(inputs)}). Tokenize the dataset so that each row has input_ids."
            )
        if "maskable" not in inputs:
            raise ValueError(
                f"The batch has no `maskable` tensor (keys: {sorted(inputs)}). Use prism_hf.training.collator.MaskedDiffusionCollator "
                "(the default data_collator) or add a boolean `maskable` (B, L) to your collator's output."
            )
        seq_len = inputs["input_ids"].shape[1]
        if self.max_length is not None and seq_len > self.max_length:
            raise ValueError(
                f"The batch has sequences of length {seq_len}, longer than the maximum {self.max_length} (max_length, or the "
                "model config's maximum sequence length). "
                "Truncate or filter the dataset (or set truncation=True in the training arguments)."
            )

    def _logits(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """Aligned posterior logits (position ``i`` predicts token ``i``) of any supported model."""
        return aligned_logits(model, input_ids, attention_mask)

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        inputs = dict(inputs)
        inputs.pop("has_maskable", None)
        self._check_batch(inputs)
        input_ids, attention_mask = inputs["input_ids"], inputs.get("attention_mask")
        noisy_ids, masked, t = forward_mask(
            input_ids,
            inputs["maskable"],
            self.mask_token_id,
            mask_eps=getattr(self.args, "mask_eps", None),
            antithetic=getattr(self.args, "antithetic", False),
            generator=self._step_generator(model, input_ids.device),
        )
        logits = self._logits(model, noisy_ids, attention_mask)
        loss = mdm_loss(logits, input_ids, masked, t)
        self._record(model, mdm_loss=loss.detach())
        return (loss, {"logits": logits}) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        if inputs.get("has_maskable", True) is False and self.accelerator.num_processes == 1:
            # Nothing to mask: no forward, no backward, no gradient (the optimizer leaves params with grad=None
            # untouched). Under several processes every rank must still join the backward's all-reduce, so the
            # batch runs with an exactly-zero loss instead.
            self._skipped_batches += 1
            logger.warning(
                "Skipping a batch in which no position may be masked (all prompt or padding); %d skipped so far.",
                self._skipped_batches,
            )
            return torch.zeros((), device=self.args.device)
        return super().training_step(model, inputs, num_items_in_batch)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # ----- metrics -------------------------------------------------------------------------------------
    def _record(self, model: nn.Module, **scalars: torch.Tensor) -> None:
        """Store per-step scalars gathered across ranks (kept as tensors: no host sync inside the step)."""
        mode = self._metrics_mode(model)
        if mode is None:
            return
        stacked = torch.stack([value.detach().float().reshape(()) for value in scalars.values()])
        gathered = self.accelerator.gather(stacked[None]).mean(0)  # one collective for all scalars
        for index, name in enumerate(scalars):
            self._metrics[mode][name].append(gathered[index])

    def _metrics_mode(self, model: nn.Module) -> Optional[str]:
        """``"train"`` / ``"eval"``, or ``None`` when nothing would ever log (and clear) the stored values."""
        if model.training:
            return None if self.args.logging_strategy == "no" else "train"
        return "eval"

    def _summarise_metrics(self, mode: str) -> Dict[str, float]:
        summary = {}
        for name, values in self._metrics[mode].items():
            if values and name != "quality_pairs":
                summary[name] = torch.stack(values).mean().item()
        return summary

    def log(self, logs: Dict[str, float], start_time: Optional[float] = None) -> None:
        mode = "train" if self.model.training else "eval"
        metrics = self._summarise_metrics(mode)
        if mode == "eval":
            metrics = {f"eval_{key}": value for key, value in metrics.items()}
        logs = {**logs, **metrics}
        self._metrics[mode].clear()
        super().log(logs, start_time)


class PrismTrainer(MDMTrainer):
    """PRISM fine-tuning: the quality head learns ``Pr[token is right | rest]`` from the model's own proposals.

    Each step runs [`prism_step`]: a forward on the masked input ``z`` (with gradients when the backbone is
    trained, else under `torch.no_grad`), ``k`` proposals filled in to make ``y`` (``n_y`` times), a forward
    on ``y`` whose quality logits are trained with binary cross-entropy against ``1[y_i == x_i]`` on the
    filled positions, plus ``mdm_loss_weight`` times the MDM loss.

    Logged (averaged over the logging window, gathered across processes): ``mdm_loss``,
    ``self_correction_loss``, ``quality_accuracy`` (``sigmoid > 0.5`` agrees with the target) and
    ``quality_auroc`` on the filled positions, and ``quality_positive_rate`` (fraction of correct proposals).

    Checkpoints are written by [`PrismForMaskedDiffusion.save_pretrained`] (head + LoRA adapter only when the
    backbone has a Hub/path reference and is not fully trained), and ``resume_from_checkpoint`` reloads them,
    with the optimizer, scheduler and RNG states, for full, LoRA and frozen training.

    Args:
        model ([`PrismForMaskedDiffusion`]): Built with ``PrismForMaskedDiffusion.from_backbone(...)``.
        args ([`PrismTrainingArguments`], *optional*): Training arguments.
        peft_config (`peft.PeftConfig`, *optional*): Wraps the backbone with this adapter (``model.enable_lora``)
            before training; the backbone is then trained through the adapter only.
        Other arguments: as for [`MDMTrainer`].
    """

    _default_args_class = PrismTrainingArguments

    def __init__(self, model: Optional[nn.Module] = None, args: Optional[TrainingArguments] = None, *pos, peft_config: Any = None, **kwargs):
        if model is not None and not isinstance(model, PrismForMaskedDiffusion):
            raise TypeError(
                f"PrismTrainer needs a PrismForMaskedDiffusion; got {type(model).__name__}. Wrap the backbone first: "
                "PrismForMaskedDiffusion.from_backbone(backbone, head_type='mlp'). For plain MDM training use MDMTrainer."
            )
        if args is None:
            args = PrismTrainingArguments(output_dir="trainer_output")
        if not isinstance(args, PrismTrainingArguments):
            raise TypeError(f"PrismTrainer needs PrismTrainingArguments; got {type(args).__name__}.")
        if args.ddp_find_unused_parameters is None:
            # Every trainable parameter is reached in every step (the backbone by the forward on z, the head by the
            # forward on y), so DDP need not search for unused ones. Searching would also break the quality-only
            # forward on y: it would mark the vocabulary projection "unused" and then see its gradient arrive.
            args.ddp_find_unused_parameters = False
        elif args.ddp_find_unused_parameters and args.skip_unused_logits:
            logger.warning("ddp_find_unused_parameters=True: skip_unused_logits is turned off (DDP would reject it).")
            args.skip_unused_logits = False
        if model is not None:
            _apply_backbone_training(model, args.backbone_training, peft_config)
            if model.config.backbone_training == "frozen" and args.mdm_loss_weight > 0:
                logger.warning(
                    "backbone_training='frozen': the forward on z runs without gradients and mdm_loss_weight=%s is "
                    "ignored (the MDM loss is still logged).", args.mdm_loss_weight,
                )
            model.config.recipe = {
                **model.config.recipe,
                "trainer": "PrismTrainer",
                **{name: getattr(args, name) for name in (
                    "num_update_tokens", "num_proposals", "mdm_loss_weight", "update_selection", "proposal_temperature",
                    "proposal_top_p", "share_proposal_draws", "mask_eps", "antithetic", "learning_rate", "head_learning_rate", "backbone_learning_rate",
                )},
                "backbone_training": model.config.backbone_training,
            }
        super().__init__(model, args, *pos, **kwargs)

    @property
    def train_backbone(self) -> bool:
        return self.accelerator.unwrap_model(self.model).config.backbone_training != "frozen"

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        inputs = dict(inputs)
        inputs.pop("has_maskable", None)
        self._check_batch(inputs)
        args = self.args
        if not self.train_backbone and model.training:
            # A frozen backbone is a fixed function: no dropout noise in the proposals or the hidden states the
            # head reads (Trainer puts the whole model back in train mode every step).
            self.accelerator.unwrap_model(model).backbone.eval()

        def model_fn(ids, attention_mask=None, **kwargs):
            return model(input_ids=ids, attention_mask=attention_mask, **kwargs)

        out = prism_step(
            model_fn,
            inputs["input_ids"],
            inputs["maskable"],
            self.mask_token_id,
            attention_mask=inputs.get("attention_mask"),
            num_update_tokens=args.num_update_tokens,
            num_proposals=args.num_proposals,
            mdm_loss_weight=args.mdm_loss_weight,
            update_selection=args.update_selection,
            proposal_temperature=args.proposal_temperature,
            proposal_top_p=args.proposal_top_p,
            share_proposal_draws=args.share_proposal_draws,
            mask_eps=args.mask_eps,
            antithetic=args.antithetic,
            train_backbone=self.train_backbone,
            generator=self._step_generator(model, inputs["input_ids"].device),
            skip_unused_logits=args.skip_unused_logits,
        )
        self._record(model, mdm_loss=out.mdm_loss, self_correction_loss=out.self_correction_loss)
        self._record_pairs(model, out.quality_logits, out.quality_targets, out.quality_valid)
        return (out.loss, out) if return_outputs else out.loss

    def _record_pairs(self, model, quality_logits, targets, valid) -> None:
        mode = self._metrics_mode(model)
        if mode is None:
            return
        pairs = torch.stack([quality_logits.flatten(), targets.flatten(), valid.flatten().float()], dim=-1)
        # Plain gather (not gather_for_metrics): rows here are positions, not samples, so the end-of-dataloader
        # de-duplication of gather_for_metrics would cut the wrong rows. Padding rows have valid = 0.
        pairs = self.accelerator.pad_across_processes(pairs, dim=0)
        self._metrics[mode]["quality_pairs"].append(self.accelerator.gather(pairs))

    def _summarise_metrics(self, mode: str) -> Dict[str, float]:
        summary = super()._summarise_metrics(mode)
        pairs = self._metrics[mode].get("quality_pairs")
        if pairs:
            pairs = torch.cat(pairs)
            logits, targets, valid = pairs[:, 0], pairs[:, 1], pairs[:, 2] > 0.5
            summary["quality_accuracy"] = quality_accuracy(logits, targets, valid).item()
            summary["quality_auroc"] = binary_auroc(logits, targets, valid).item()
            summary["quality_positive_rate"] = ((targets * valid).sum() / valid.sum()).item()
            summary["quality_num_positions"] = float(valid.sum().item())
        return summary

    def create_optimizer(self, model=None):
        args = self.args
        opt_model = self.model if model is None else model
        if self.optimizer is not None or (args.head_learning_rate is None and args.backbone_learning_rate is None):
            return super().create_optimizer(model)
        decay = set(self.get_decay_parameter_names(opt_model))
        groups = []
        for is_head, lr in ((True, args.head_learning_rate), (False, args.backbone_learning_rate)):
            for with_decay in (True, False):
                params = [
                    p for n, p in opt_model.named_parameters()
                    if p.requires_grad and n.startswith("quality_head.") == is_head and (n in decay) == with_decay
                ]
                if params:
                    groups.append({
                        "params": params,
                        "weight_decay": args.weight_decay if with_decay else 0.0,
                        "lr": args.learning_rate if lr is None else lr,
                    })
        if self.optimizer_cls_and_kwargs is not None:
            optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs
        else:
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(args, opt_model)
        optimizer_kwargs = {k: v for k, v in optimizer_kwargs.items() if k not in ("params", "model", "optimizer_dict")}
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    # ----- checkpoints ---------------------------------------------------------------------------------
    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Optional[nn.Module] = None) -> None:
        """Reload a checkpoint written by `PrismForMaskedDiffusion.save_pretrained` into the model being trained.

        Knows the PRISM layout ([`~prism_hf.modeling.checkpointing.restore_training_checkpoint`]):
        ``model.safetensors`` (head, plus the backbone when it was stored) and the ``adapter/`` folder of a LoRA
        backbone (which `Trainer`'s default loader does not look into).
        """
        model = self.model if model is None else model
        saved_mode = restore_training_checkpoint(self.accelerator.unwrap_model(model), resume_from_checkpoint)
        logger.info("Resumed PRISM weights from %s (backbone_training=%s).", resume_from_checkpoint, saved_mode)

    def _load_best_model(self) -> None:
        self._load_from_checkpoint(self.state.best_model_checkpoint)


# ----- helpers ----------------------------------------------------------------------------------------
def _check_dataset_columns(name: str, dataset: Any) -> None:
    datasets = dataset.values() if isinstance(dataset, dict) else [dataset]
    for ds in datasets:
        columns = getattr(ds, "column_names", None)
        if columns is not None and "input_ids" not in columns:
            raise ValueError(
                f"{name} has no `input_ids` column (columns: {columns}). Tokenize it first, e.g. "
                "dataset.map(lambda row: tokenizer(row['text']), batched=True, remove_columns=['text'])."
            )


def _apply_backbone_training(model: PrismForMaskedDiffusion, mode: Optional[str], peft_config: Any) -> None:
    current = model.config.backbone_training
    if peft_config is not None:
        if mode not in (None, "lora"):
            raise ValueError(f"peft_config was given but backbone_training={mode!r}; use backbone_training='lora' or None.")
        if is_peft_model(model.backbone):
            raise ValueError("peft_config was given but the model's backbone already carries an adapter.")
        model.enable_lora(peft_config)
        return
    if mode is None or mode == current:
        if mode == "lora" and not is_peft_model(model.backbone):
            raise ValueError("backbone_training='lora' needs peft_config=LoraConfig(...) (or a model after enable_lora).")
        return
    if mode == "lora":
        raise ValueError("backbone_training='lora' needs peft_config=LoraConfig(...) passed to PrismTrainer.")
    model.set_backbone_training(mode)
