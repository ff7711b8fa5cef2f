"""Deprecated: the example scripts' argument parsing moved to ``examples/arguments.py`` (it serves only them).

Importing this module warns (`FutureWarning`); it is removed in prism_hf 0.3.0. It keeps its own copy of the two
functions for that one release, because an installed wheel has no ``examples/`` folder to load them from; the
maintained copy is ``examples/arguments.py``.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence, Tuple

from .utils.deprecation import REMOVAL_VERSION

__all__ = ["parse_args_with_config", "train_resume_save"]

warnings.warn(
    "prism_hf.arguments is deprecated: it serves only the example scripts and moved to examples/arguments.py (copy "
    f"that file next to your script). It will be removed in prism_hf {REMOVAL_VERSION}.",
    FutureWarning,
    stacklevel=2,
)


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
