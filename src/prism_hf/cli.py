"""The ``prism-hf`` command line.

Built-in commands:

* ``prism-hf --version``: the installed version.
* ``prism-hf info``: version, library versions, registered backbone families and quality head types.

Task commands are plug-ins: every module named in [`SUBCOMMAND_MODULES`] exposes
``register(subparsers)``, which adds its sub-parser(s) to the ``argparse`` sub-parsers object and sets
``func`` with ``parser.set_defaults(func=handler)``; ``handler(args)`` returns an exit code (or ``None``
for 0). A plug-in module that does not exist yet (the ``ModuleNotFoundError`` names that module or
one of its parent packages) is skipped; any other import error is raised, so a broken plug-in is
never silently hidden.

Example:
    ```python
    # my_package/cli.py
    def register(subparsers):
        parser = subparsers.add_parser("hello", help="Say hello.")
        parser.add_argument("--name", default="world")
        parser.set_defaults(func=lambda args: print(f"hello {args.name}"))
    ```
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional, Sequence

__all__ = ["SUBCOMMAND_MODULES", "build_parser", "main"]

#: Modules whose ``register(subparsers)`` adds task commands (``prism-hf sudoku ...``).
SUBCOMMAND_MODULES: List[str] = ["prism_hf.tasks.sudoku.cli"]


def _is_missing(module_name: str, err: ModuleNotFoundError) -> bool:
    """True when ``err`` says that ``module_name`` itself (or a parent package of it) does not exist."""
    if err.name is None:
        return False
    parts = module_name.split(".")
    return err.name in {".".join(parts[: i + 1]) for i in range(len(parts))}


def _load_plugins(subparsers: argparse._SubParsersAction, module_names: Sequence[str]) -> List[str]:
    loaded = []
    for module_name in module_names:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if _is_missing(module_name, err):
                continue
            raise
        register = getattr(module, "register", None)
        if not callable(register):
            raise TypeError(
                f"CLI plug-in module {module_name!r} has no callable `register(subparsers)`; every module in "
                "prism_hf.cli.SUBCOMMAND_MODULES must define one."
            )
        register(subparsers)
        loaded.append(module_name)
    return loaded


def _cmd_info(args: argparse.Namespace) -> int:
    import torch
    import transformers

    import prism_hf
    from prism_hf.modeling.families import registered_families
    from prism_hf.modeling.heads import HEAD_REGISTRY

    print(f"prism_hf {prism_hf.__version__}")
    print(f"torch {torch.__version__} (cuda available: {torch.cuda.is_available()}), transformers {transformers.__version__}")
    print()
    print("Registered backbone families:")
    families = {}
    for model_type, family in registered_families().items():
        families.setdefault(family.name, (family, []))[1].append(model_type)
    for name, (family, model_types) in families.items():
        print(
            f"  {name:<10} model_type: {', '.join(model_types)} | auto_class: {family.auto_class} | "
            f"logits_shift: {family.logits_shift} | attention mask: {family.attention_mask_convention}"
        )
    print()
    print("Quality head types:")
    for head_type, head_cls in sorted(HEAD_REGISTRY.items()):
        doc = (head_cls.__doc__ or "").strip().splitlines()
        summary = doc[0].replace("``", "") if doc else head_cls.__name__
        print(f"  {head_type:<12} {summary}")
    commands = sorted(getattr(args, "_plugin_commands", []))
    if commands:
        print()
        print(f"Task commands: {', '.join(commands)}")
    return 0


def _version() -> str:
    from prism_hf import __version__

    return __version__


def build_parser(plugin_modules: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """The ``prism-hf`` argument parser, with the plug-ins of ``plugin_modules`` (default
    [`SUBCOMMAND_MODULES`]) registered."""
    parser = argparse.ArgumentParser(
        prog="prism-hf",
        description="PRISM self-correction for masked diffusion language models (Hugging Face plug-in).",
    )
    parser.add_argument("--version", action="version", version=f"prism_hf {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = subparsers.add_parser("info", help="Show the version, registered backbone families and head types.")
    info.set_defaults(func=_cmd_info)
    before = set(subparsers.choices)
    _load_plugins(subparsers, SUBCOMMAND_MODULES if plugin_modules is None else plugin_modules)
    info.set_defaults(_plugin_commands=sorted(set(subparsers.choices) - before))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``prism-hf`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    code = func(args)
    return 0 if code is None else int(code)


if __name__ == "__main__":
    sys.exit(main())
