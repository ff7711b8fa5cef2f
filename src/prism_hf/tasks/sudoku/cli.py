"""``prism-hf sudoku demo | pretrain | finetune | evaluate``.

Registered by `prism_hf.cli` through [`register`]. Imports of torch and the trainers happen inside the
handlers, so ``prism-hf --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

__all__ = ["register", "main"]


def _int_at_least(flag: str, minimum: int, valid: str):
    """An ``argparse`` type: an int >= ``minimum``; ``valid`` (what to pass) ends both error messages."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} {text!r} is not an integer; {valid}.") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{flag} {value} is not valid; {valid}.")
        return value

    return parse


_nfe_list = _int_at_least("--nfe", 1, "the number of model forwards must be an int >= 1")
_num_threads_int = _int_at_least("--num-threads", 0, "pass 0 (torch's default) or a count >= 1")


def _num_threads(text: str):
    """``auto`` or an int >= 0 (see [`auto_num_threads`])."""
    return "auto" if text == "auto" else _num_threads_int(text)


def _busy_cpus(interval: float = 0.5, stat_path: str = "/proc/stat") -> Optional[float]:
    """CPUs busy right now, from two reads of ``/proc/stat`` ``interval`` seconds apart (Linux); `None` elsewhere."""
    import time

    def read():
        with open(stat_path) as f:
            fields = [float(x) for x in f.readline().split()[1:]]
        return fields[3] + (fields[4] if len(fields) > 4 else 0.0), sum(fields)  # idle + iowait, total

    try:
        idle0, total0 = read()
        time.sleep(interval)
        idle1, total1 = read()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (1.0 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1)


def auto_num_threads(max_threads: int = 2) -> int:
    """torch threads for a Sudoku run: up to ``max_threads`` (2), no more than the CPUs this process may use that are
    idle now, and at least 1. "Idle now" is measured over half a second from ``/proc/stat`` (the load average, used
    where that file is missing, still counts a job that ended a minute ago).

    With a model this small a second thread makes training about 1.45x faster on an idle 2-core machine (the demo
    recipe's fine-tuning: 0.30 against 0.44 s a step), more threads add little, and a thread that has to share its core
    with another busy process makes the whole run several times slower (threads wait on each other).
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = _busy_cpus()
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):  # not on every platform
            busy = 0.0
    return max(1, min(max_threads, int(cpus - busy + 0.5)))


def _method_name(text: str) -> str:
    """An ``argparse`` type: a name of the method table (`prism_hf.sampling.presets`), read only when ``--methods``
    is given, so that building the parser imports no sampling code."""
    from ...sampling.presets import METHOD_PRESETS

    try:
        METHOD_PRESETS.lookup(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--methods: {err}") from None
    return text


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _check_creatable(path: str, flag: str) -> None:
    """The folders above ``path`` exist or can be created, and the nearest existing one is a writable folder."""
    from .grids import SudokuInputError

    base = _nearest_existing(os.path.dirname(os.path.abspath(path)) or ".")
    if not os.path.isdir(base):
        raise SudokuInputError(f"{flag} {path!r} cannot be created: {base!r} is a file, not a folder.")
    if not os.access(base, os.W_OK | os.X_OK):
        raise SudokuInputError(f"{flag} {path!r} cannot be created: the folder {base!r} is not writable.")


def check_output_file(path: str, flag: str) -> None:
    """Raise `SudokuInputError` unless ``path`` can be written as a file (checked before any work is done)."""
    from .grids import SudokuInputError

    if os.path.isdir(path):
        raise SudokuInputError(
            f"{flag} {path!r} is a folder; pass a file path for the results, e.g. {os.path.join(path, 'results.json')!r}."
        )
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise SudokuInputError(f"{flag} {path!r} exists and is not writable.")
        return
    _check_creatable(path, flag)


def check_output_dir(path: str, flag: str) -> None:
    """Raise `SudokuInputError` unless ``path`` is (or can be created as) a writable folder."""
    from .grids import SudokuInputError

    if os.path.exists(path):
        if not os.path.isdir(path):
            raise SudokuInputError(f"{flag} {path!r} is a file; pass a folder.")
        if not os.access(path, os.W_OK | os.X_OK):
            raise SudokuInputError(f"{flag} {path!r} is not a writable folder.")
        return
    _check_creatable(path, flag)


def _default_cache_dir(output: str) -> str:
    root, _ = os.path.splitext(output)
    return f"{root}_cache"


def _add_recipe_args(parser: argparse.ArgumentParser, training: bool = True) -> None:
    group = parser.add_argument_group("recipe (defaults from --recipe)")
    group.add_argument("--recipe", default="demo", choices=["demo", "paper", "tiny"],
                       help="Preset: demo (2-core CPU, about 10.5 min), paper (9x9, the paper's hyperparameters, GPU), tiny (tests).")
    group.add_argument("--size", type=int, default=None, help="Grid size n = a*b (4, 6, 9, ...).")
    group.add_argument("--box-rows", type=int, default=None, help="Rows per box (default: the most square box).")
    if training:
        group.add_argument("--hidden-size", type=int, default=None)
        group.add_argument("--num-hidden-layers", type=int, default=None)
        group.add_argument("--num-attention-heads", type=int, default=None)
        group.add_argument("--pretrain-steps", type=int, default=None)
        group.add_argument("--pretrain-batch-size", type=int, default=None)
        group.add_argument("--pretrain-learning-rate", type=float, default=None)
        group.add_argument("--finetune-steps", type=int, default=None)
        group.add_argument("--finetune-batch-size", type=int, default=None)
        group.add_argument("--finetune-learning-rate", type=float, default=None)
        group.add_argument("--num-update-tokens", type=int, default=None, help="k of the PRISM loss (demo: 12; the paper's Sudoku recipe: 4).")
        group.add_argument("--num-proposals", type=int, default=None, help="n_y: proposals per masked grid (Sudoku: 1).")
        group.add_argument("--proposal-temperature", type=float, default=None,
                           help="Temperature of the proposal draws of the PRISM loss (0 = greedy).")
        group.add_argument("--mdm-loss-weight", type=float, default=None, help="lambda of the PRISM loss (Sudoku: 5).")
        group.add_argument("--head-type", default=None, help="Quality head type (linear, mlp, transformer).")
        group.add_argument("--head", default=None, help=argparse.SUPPRESS)  # the earlier name of --head-type
        group.add_argument("--train-seed", type=int, default=None)
    group.add_argument("--num-eval-puzzles", type=int, default=None)
    group.add_argument("--num-blanks", type=int, nargs=2, default=None, metavar=("LOW", "HIGH"))
    group.add_argument("--eval-seed", type=int, default=None, help="Seed of the generated held-out puzzles.")
    group.add_argument("--unique-puzzles", action=argparse.BooleanOptionalAction, default=None,
                       help="Generated held-out puzzles have exactly one solution (default: the recipe's; the demo's "
                       "puzzles may have several, and any valid completion that keeps the givens counts as solved).")
    group.add_argument("--unmasking", default=None, choices=["confidence", "margin", "entropy", "random"],
                       help="Unmasking rule of PRISM and the same-count remasking baselines.")
    group.add_argument("--num-remask", type=int, default=None, help="Tokens remasked per step.")
    group.add_argument("--eval-batch-size", type=int, default=None)
    parser.add_argument("--no-progress", action="store_true", help="Hide progress bars.")
    parser.add_argument("--num-threads", type=_num_threads, default="auto",
                        help="torch CPU threads: 'auto' (default) takes 2 when two CPUs are idle, else 1 (with a model "
                        "this small more threads add little, and a thread that shares its core with another busy process "
                        "slows the whole run several times); 0 keeps torch's default; a count >= 1 is used as given.")


_RECIPE_FIELDS = (
    "size", "box_rows", "hidden_size", "num_hidden_layers", "num_attention_heads", "pretrain_steps",
    "pretrain_batch_size", "pretrain_learning_rate", "finetune_steps", "finetune_batch_size", "finetune_learning_rate",
    "num_update_tokens", "num_proposals", "proposal_temperature", "mdm_loss_weight", "head_type", "train_seed",
    "num_eval_puzzles", "num_blanks", "eval_seed",
    "unique_puzzles", "unmasking", "num_remask", "eval_batch_size",
)


def _recipe(args: argparse.Namespace, base=None):
    from ...utils.deprecation import rename_kwarg
    from .grids import SudokuInputError
    from .recipes import get_recipe

    overrides = {name: getattr(args, name, None) for name in _RECIPE_FIELDS}
    earlier = {"--head": args.head} if getattr(args, "head", None) is not None else {}
    try:
        overrides["head_type"] = rename_kwarg(earlier, "--head", "--head-type", "prism-hf sudoku",
                                              current=overrides["head_type"])
    except TypeError as err:
        raise SudokuInputError(str(err)) from None
    if overrides.get("num_blanks") is not None:
        overrides["num_blanks"] = tuple(overrides["num_blanks"])
    if overrides.get("size") is not None and overrides.get("box_rows") is None:
        overrides["box_rows"] = None
    if base is not None:
        return base.replace(**{k: v for k, v in overrides.items() if v is not None})
    recipe = get_recipe(args.recipe, **overrides)
    if getattr(args, "nfe", None):
        recipe = recipe.replace(nfe=args.nfe[0])
    return recipe


def _handle_errors(fn):
    def wrapper(args):
        from .grids import SudokuInputError

        threads = getattr(args, "num_threads", None)
        if threads == "auto":
            threads = args.num_threads = auto_num_threads()
        if threads:  # 0 / None: torch's default
            import torch

            torch.set_num_threads(threads)
        try:
            return fn(args)
        except SudokuInputError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    return wrapper


@_handle_errors
def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    recipe = _recipe(args)
    check_output_dir(args.output_dir, "--output-dir")
    run_demo(args.output_dir, recipe, methods=args.methods, nfe=args.nfe, show_progress=not args.no_progress)
    return 0


@_handle_errors
def _cmd_pretrain(args: argparse.Namespace) -> int:
    from .train import pretrain

    recipe = _recipe(args)
    check_output_dir(args.output_dir, "--output-dir")
    path = pretrain(recipe, args.output_dir, show_progress=not args.no_progress)
    print(f"backbone saved to {path}")
    return 0


@_handle_errors
def _cmd_finetune(args: argparse.Namespace) -> int:
    from .recipes import SudokuRecipe
    from .train import finetune

    recipe, source = _recipe(args), f"--recipe {args.recipe}"
    if args.size is None and os.path.isfile(os.path.join(args.backbone, "sudoku_recipe.json")):
        # The backbone's grid and architecture come from its own recipe; the command line overrides the rest.
        recipe = _recipe(args, base=SudokuRecipe.load(args.backbone))
        source = os.path.join(args.backbone, "sudoku_recipe.json")
    check_output_dir(args.output_dir, "--output-dir")
    # Said before the run: a backbone of an older version keeps that version's fine-tuning settings (docs/sudoku.md).
    print(f"fine-tuning: {recipe.finetune_steps} steps x {recipe.finetune_batch_size}, lr {recipe.finetune_learning_rate}, "
          f"k={recipe.num_update_tokens}, n_y={recipe.num_proposals}, proposal temperature {recipe.proposal_temperature}, "
          f"lambda={recipe.mdm_loss_weight}, head_type={recipe.head_type} (from {source}; flags override single fields)")
    path = finetune(recipe, args.backbone, args.output_dir, show_progress=not args.no_progress)
    print(f"PRISM checkpoint saved to {path}")
    return 0


@_handle_errors
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .demo import run_evaluation, write_report
    from .evaluation import format_table
    from .recipes import SudokuRecipe

    base = SudokuRecipe.load(args.checkpoint)
    recipe = _recipe(args, base=base)
    # Every output is checked before the evaluation starts, so a bad path never costs a finished run; finished
    # (method, NFE) records go to the cache as they complete, so a crash loses nothing either.
    check_output_file(args.output, "--output")
    cache_dir = None if args.no_cache else (args.cache_dir or _default_cache_dir(args.output))
    if cache_dir is not None:
        check_output_dir(cache_dir, "--cache-dir")
    if args.figures_dir:
        check_output_dir(args.figures_dir, "--figures-dir")
    result = run_evaluation(args.checkpoint, recipe=recipe, puzzles_path=args.puzzles, methods=args.methods,
                            nfe=args.nfe, cache_dir=cache_dir, show_progress=not args.no_progress)
    result["checkpoint"] = args.checkpoint
    result["puzzles"] = args.puzzles
    figures = args.figures_dir
    write_report(result, args.output, figures_dir=figures, low_quality_threshold=recipe.low_quality_threshold)
    print(format_table(result))
    print(f"results: {args.output}")
    return 0


_METHODS_HELP = (
    "Sampling methods to evaluate, names of the method table prism_hf.sampling.presets (`prism-hf info` lists them; "
    "default: PRISM and its six baselines, prism_hf.tasks.sudoku.evaluation.METHODS)."
)


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``sudoku`` command (with ``demo``, ``pretrain``, ``finetune``, ``evaluate``) to ``subparsers``."""
    parser = subparsers.add_parser(
        "sudoku", help="Train an MDM on Sudoku, fine-tune it with PRISM and compare samplers.",
        description="Sudoku with PRISM: `demo` runs everything; `pretrain`, `finetune`, `evaluate` run one stage.",
    )
    sub = parser.add_subparsers(dest="sudoku_command", metavar="{demo,pretrain,finetune,evaluate}")
    sub.required = True

    demo = sub.add_parser("demo", help="Pretrain, PRISM fine-tune, evaluate every method and report (resumable).")
    demo.add_argument("--output-dir", default="sudoku_demo", help="Leaves backbone/, prism/, results.json and PNGs.")
    demo.add_argument("--methods", nargs="+", type=_method_name, default=None, metavar="METHOD", help=_METHODS_HELP)
    demo.add_argument("--nfe", type=_nfe_list, nargs="+", default=None, help="Model forwards per puzzle (default: the recipe's).")
    _add_recipe_args(demo)
    demo.set_defaults(func=_cmd_demo)

    pre = sub.add_parser("pretrain", help="MDM pretraining of the Sudoku backbone.")
    pre.add_argument("--output-dir", required=True, help="Where the backbone is saved.")
    _add_recipe_args(pre)
    pre.set_defaults(func=_cmd_pretrain)

    fin = sub.add_parser("finetune", help="PRISM fine-tuning of a pretrained backbone.")
    fin.add_argument("--backbone", required=True, help="Folder written by `prism-hf sudoku pretrain`.")
    fin.add_argument("--output-dir", required=True, help="Where the PRISM checkpoint is saved.")
    _add_recipe_args(fin)
    fin.set_defaults(func=_cmd_finetune)

    ev = sub.add_parser("evaluate", help="Success rate of every method, quality AUROC and calibration.")
    ev.add_argument("--checkpoint", required=True, help="A PRISM checkpoint folder (e.g. DIR/prism).")
    ev.add_argument("--puzzles", default=None, help="CSV puzzle file (one token row per line); default: the "
                    "checkpoint recipe's generated held-out puzzles.")
    ev.add_argument("--output", default="sudoku_results.json", help="Results JSON.")
    ev.add_argument("--methods", nargs="+", type=_method_name, default=None, metavar="METHOD", help=_METHODS_HELP)
    ev.add_argument("--nfe", type=_nfe_list, nargs="+", default=None, help="One or more NFE values (default: the checkpoint's).")
    ev.add_argument("--figures-dir", default=None, help="Also write quality_grids.png and reliability.png here.")
    ev.add_argument("--cache-dir", default=None, help="Finished (method, NFE) records are stored here as they complete "
                    "and reused by a rerun (default: OUTPUT without .json, plus _cache).")
    ev.add_argument("--no-cache", action="store_true", help="Do not store or reuse finished records.")
    _add_recipe_args(ev, training=False)
    ev.set_defaults(func=_cmd_evaluate)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``sudoku ...`` without the ``prism-hf`` entry point (``python -m prism_hf.tasks.sudoku.cli demo``)."""
    top = argparse.ArgumentParser(prog="prism-hf")
    register(top.add_subparsers(dest="command"))
    args = top.parse_args(["sudoku", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args) or 0


if __name__ == "__main__":
    raise SystemExit(main())
