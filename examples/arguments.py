"""Command-line parsing and the training run shared by the example scripts (train_text.py, train_code.py, eval_text.py).

``parse_args_with_config`` reads dataclass arguments with an optional ``--config`` YAML file, ``prism_model_from_arguments``
wraps the backbone the model arguments name, ``train_resume_save`` resumes, trains and saves. The scripts import this
file from their own folder (``python examples/train_text.py ...`` puts ``examples/`` on the import path; a script
loaded another way adds it itself). It served as ``prism_hf.arguments`` before; that module is deprecated and is
removed in prism_hf 0.3.0.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence, Tuple

__all__ = ["parse_args_with_config", "prism_model_from_arguments", "train_resume_save"]


def parse_args_with_config(dataclass_types: Sequence[type], argv: Optional[Sequence[str]] = None) -> Tuple:
    """Parse ``argv`` into the given dataclasses with `transformers.HfArgumentParser`.

    ``--config file.yaml`` supplies defaults for any field of any of the dataclasses; flags given on the
    command line override it. Unknown keys in the file are an error that names them.

    Args:
        dataclass_types (`Sequence[type]`): The argument dataclasses, e.g. ``(ModelArguments, TrainingArguments)``.
        argv (`Sequence[str]`, *optional*): Arguments to parse; defaults to ``sys.argv[1:]``.

    Returns:
        `tuple`: One instance per dataclass, in order.
    """
    import yaml
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(tuple(dataclass_types))
    if "--config" in argv:
        at = argv.index("--config")
        if at + 1 >= len(argv):
            raise ValueError("--config needs a YAML file path.")
        config_path = Path(argv[at + 1])
        del argv[at : at + 2]
        if not config_path.is_file():
            raise FileNotFoundError(f"--config {config_path}: no such file.")
        values = yaml.safe_load(config_path.read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"--config {config_path}: expected a mapping of argument names to values.")
        known = {name for dc in parser.dataclass_types for name in dc.__dataclass_fields__}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"--config {config_path}: unknown keys {unknown}.")
        parser.set_defaults(**values)
    return tuple(parser.parse_args_into_dataclasses(args=argv))


def prism_model_from_arguments(model_args, tokenizer=None):
    """A fresh PRISM model on the backbone the model arguments name.

    Args:
        model_args: The script's model arguments: ``model_name_or_path``, ``head_type``, ``revision``,
            ``trust_remote_code`` and ``dtype`` (a torch dtype name or ``"auto"``).
        tokenizer (*optional*): Gives the mask id when the backbone's config has none.

    Returns:
        [`PrismForMaskedDiffusion`]: the backbone with a new quality head of type ``model_args.head_type``.
    """
    import torch

    from prism_hf import PrismForMaskedDiffusion

    dtype = model_args.dtype if model_args.dtype == "auto" else getattr(torch, model_args.dtype)
    return PrismForMaskedDiffusion.from_backbone(
        model_args.model_name_or_path,
        head_type=model_args.head_type,
        revision=model_args.revision,
        trust_remote_code=model_args.trust_remote_code,
        dtype=dtype,
        tokenizer=tokenizer,
    )


def train_resume_save(trainer, tokenizer=None):
    """The example scripts' run: resume from the last checkpoint in ``output_dir`` (or ``resume_from_checkpoint``),
    train, save the final model (and tokenizer, metrics, state) and push it when ``push_to_hub`` is set.

    Args:
        trainer (`transformers.Trainer`): A configured trainer (e.g. [`PrismTrainer`]).
        tokenizer (*optional*): Saved next to the final checkpoint.

    Returns:
        The `TrainOutput` of ``trainer.train``.
    """
    import logging
    import os

    from transformers.trainer_utils import get_last_checkpoint

    args = trainer.args
    last_checkpoint = args.resume_from_checkpoint
    if last_checkpoint is None and os.path.isdir(args.output_dir):
        last_checkpoint = get_last_checkpoint(args.output_dir)
        if last_checkpoint:
            logging.getLogger(__name__).info("Resuming from %s", last_checkpoint)
    result = trainer.train(resume_from_checkpoint=last_checkpoint)
    trainer.save_model(args.output_dir)
    if trainer.is_world_process_zero():
        if tokenizer is not None:
            tokenizer.save_pretrained(args.output_dir)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()
        if args.push_to_hub:
            trainer.accelerator.unwrap_model(trainer.model).push_to_hub(args.hub_model_id)
    return result
