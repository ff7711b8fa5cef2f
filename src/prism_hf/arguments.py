"""Command-line parsing shared by the example scripts: dataclass arguments plus an optional YAML config."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence, Tuple

__all__ = ["parse_args_with_config"]


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
