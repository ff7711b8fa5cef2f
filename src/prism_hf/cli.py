"""The ``prism-hf`` command line.

Built-in commands:

* ``prism-hf --version``: the installed version.
* ``prism-hf info``: version, library versions, registered backbone families, quality head types and sampling methods.

Task commands are plug-ins, found through the entry-point group ``prism_hf.commands`` ([`ENTRY_POINT_GROUP`]), so
this module names no task: prism_hf's own Sudoku task registers ``sudoku = prism_hf.tasks.sudoku.cli:register`` in
its ``setup.py``, and any installed package can add commands the same way. An entry point names a callable
``register(subparsers)`` (or a module that has one), which adds its sub-parser(s) to the ``argparse`` sub-parsers
object and sets ``func`` with ``parser.set_defaults(func=handler)``; ``handler(args)`` returns an exit code (or
``None`` for 0). An entry point whose module is not installed (stale package metadata) is skipped with a warning; any
other import error is raised, so a broken plug-in is never silently hidden. Modules listed in
[`SUBCOMMAND_MODULES`] are loaded too (a plug-in under development, before it is installed).

Example:
    ```python
    # my_package/cli.py
    def register(subparsers):
        parser = subparsers.add_parser("hello", help="Say hello.")
        parser.add_argument("--name", default="world")
        parser.set_defaults(func=lambda args: print(f"hello {args.name}"))

    # my_package's setup.py:  entry_points={"prism_hf.commands": ["hello = my_package.cli:register"]}
    ```
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from importlib import metadata
from typing import Callable, List, Optional, Sequence, Tuple

__all__ = ["ENTRY_POINT_GROUP", "SUBCOMMAND_MODULES", "command_entry_points", "build_parser", "main"]

#: The entry-point group of task commands (``prism-hf sudoku ...``).
ENTRY_POINT_GROUP = "prism_hf.commands"

#: Further modules whose ``register(subparsers)`` adds commands, besides the installed entry points (empty by default).
SUBCOMMAND_MODULES: List[str] = []


def _is_missing(module_name: str, err: ModuleNotFoundError) -> bool:
    """True when ``err`` says that ``module_name`` itself (or a parent package of it) does not exist."""
    if err.name is None:
        return False
    parts = module_name.split(".")
    return err.name in {".".join(parts[: i + 1]) for i in range(len(parts))}


def _register_function(source: str, loaded) -> Callable:
    """The ``register(subparsers)`` of a loaded plug-in: the object itself, or a module's ``register``."""
    register = getattr(loaded, "register", None) if isinstance(loaded, type(sys)) else loaded
    if not callable(register):
        raise TypeError(
            f"CLI plug-in {source} has no callable `register(subparsers)`; a module in "
            "prism_hf.cli.SUBCOMMAND_MODULES, or a module an entry point of the group "
            f"{ENTRY_POINT_GROUP!r} names, must define one."
        )
    return register


def command_entry_points() -> List[metadata.EntryPoint]:
    """The installed entry points of [`ENTRY_POINT_GROUP`], sorted by name."""
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _plugins(module_names: Sequence[str]) -> List[Tuple[str, Callable]]:
    """``(source, register)`` of every installed entry point and of every module in ``module_names``."""
    found = []
    for entry_point in command_entry_points():
        source = f"entry point {entry_point.name} = {entry_point.value!r}"
        try:
            loaded = entry_point.load()
        except ModuleNotFoundError as err:
            if not _is_missing(entry_point.module, err):
                raise
            warnings.warn(f"prism-hf: skipping the command of {source}: module {err.name!r} is not installed "
                          "(stale package metadata; reinstall or uninstall the package that declares it).",
                          RuntimeWarning, stacklevel=3)
            continue
        found.append((source, _register_function(source, loaded)))
    for module_name in module_names:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if _is_missing(module_name, err):
                continue
            raise
        found.append((f"module {module_name!r}", _register_function(f"module {module_name!r}", module)))
    return found


def _cmd_info(args: argparse.Namespace) -> int:
    import torch
    import transformers

    import prism_hf
    from prism_hf.modeling.families import registered_families
    from prism_hf.modeling.heads import HEAD_REGISTRY
    from prism_hf.sampling.presets import METHOD_PRESETS

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
    print()
    print("Sampling methods (prism_hf.sampling.presets):")
    for name, preset in METHOD_PRESETS.items():
        print(f"  {name:<19} {preset.description}")
    commands = sorted(getattr(args, "_plugin_commands", []))
    if commands:
        print()
        print(f"Task commands: {', '.join(commands)}")
    return 0


def _version() -> str:
    from prism_hf import __version__

    return __version__


def build_parser(plugin_modules: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """The ``prism-hf`` argument parser, with the commands of the installed [`ENTRY_POINT_GROUP`] entry points and
    of ``plugin_modules`` (default [`SUBCOMMAND_MODULES`]) registered."""
    plugins = _plugins(SUBCOMMAND_MODULES if plugin_modules is None else plugin_modules)
    parser = argparse.ArgumentParser(
        prog="prism-hf",
        description="PRISM self-correction for masked diffusion language models (Hugging Face plug-in).",
        epilog=None if plugins else (
            f"No task commands are installed (entry-point group {ENTRY_POINT_GROUP!r} is empty): reinstall prism_hf "
            "(pip install -e .) so that its package metadata lists them."
        ),
    )
    parser.add_argument("--version", action="version", version=f"prism_hf {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    info = subparsers.add_parser("info", help="Show the version, registered backbone families, head types and methods.")
    info.set_defaults(func=_cmd_info)
    before = set(subparsers.choices)
    for _, register in plugins:
        register(subparsers)
    parser.task_commands = sorted(set(subparsers.choices) - before)
    info.set_defaults(_plugin_commands=parser.task_commands)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``prism-hf`` console script; returns the exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    if first is not None and first != "info" and not parser.task_commands:
        # An unknown command while no task command is installed: most often a checkout updated past the release
        # that moved task commands to entry points, without reinstalling.
        parser.error(f"argument COMMAND: invalid choice: {first!r} (choose from 'info'). No task commands are "
                     f"installed (entry-point group {ENTRY_POINT_GROUP!r} is empty): reinstall prism_hf "
                     "(pip install -e .) so that its package metadata lists them.")
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    code = func(args)
    return 0 if code is None else int(code)


if __name__ == "__main__":
    sys.exit(main())
