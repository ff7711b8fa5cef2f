"""Named sampling methods: PRISM and the baselines every comparison runs, as [`PrismScheduler`] settings.

One table serves the Sudoku evaluation (``prism-hf sudoku evaluate --methods``), the text evaluation
(``examples/eval_text.py --rules``) and the code evaluation (``examples/eval_code.py --method``). A method fixes what
makes it that method (its remasking rule, and for the vanilla baselines the unmasking rule); the rest comes from the
task, whose *sampler settings* are PRISM's own recipe for it:

* ``unmasking``: the task's unmasking rule (Sudoku: the recipe's; text: ``"random"``; code: ``"confidence"``), used by
  every method that does not fix its own;
* the remask counts (``num_remask``, ``remask_schedule``, ``remask_budget``, ``eta``, ``step_on``, ``step_off``,
  ``prism_loop_steps``: [`REMASK_COUNT_FIELDS`]): taken by ``prism`` and by the two same-count baselines
  (``confidence-remask``, ``random-remask``), so that those isolate what the learned head adds.

| method | remasking | unmasking | remask counts |
|---|---|---|---|
| ``vanilla`` | ``none`` | the task's | - |
| ``vanilla-confidence``, ``-margin``, ``-entropy``, ``-random`` | ``none`` | that rule | - |
| ``remdm-cap`` | ``remdm_cap``, ``eta=0.04`` (the PRISM paper's text baseline) | the task's | - |
| ``remdm-rescale``, ``remdm-conf``, ``remdm-loop`` | that ReMDM rule, public defaults | the task's | - |
| ``confidence-remask`` | ``confidence`` (lowest unmasking confidence) | the task's | the task's |
| ``random-remask`` | ``random`` | the task's | the task's |
| ``prism`` | ``prism`` (lowest quality) | the task's | the task's |

The text evaluation's earlier names (``remdm_cap``, ``remdm_rescale``, ``remdm_conf``, ``remdm_loop``,
``confidence``, ``random``) still resolve, with a `FutureWarning`, until prism_hf 0.3.0.

Example:
    ```python
    >>> from prism_hf.sampling.presets import get_method_preset
    >>> sudoku = {"unmasking": "random", "num_remask": 4, "remask_schedule": "fixed"}
    >>> get_method_preset("prism").scheduler_kwargs(sudoku)
    {'remasking': 'prism', 'unmasking': 'random', 'num_remask': 4, 'remask_schedule': 'fixed'}
    >>> get_method_preset("vanilla-margin").scheduler_kwargs(sudoku)
    {'remasking': 'none', 'unmasking': 'margin'}
    ```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from ..utils.deprecation import warn_deprecated
from ..utils.registry import Registry

__all__ = [
    "MethodPreset",
    "METHOD_PRESETS",
    "REMASK_COUNT_FIELDS",
    "TASK_SAMPLER_FIELDS",
    "DEPRECATED_METHOD_NAMES",
    "register_method_preset",
    "get_method_preset",
    "method_names",
]

#: Scheduler arguments that set how many tokens are remasked and when: PRISM's counts, shared by the same-count
#: baselines.
REMASK_COUNT_FIELDS: Tuple[str, ...] = (
    "num_remask", "remask_schedule", "remask_budget", "eta", "step_on", "step_off", "prism_loop_steps",
)
#: What a task's sampler settings may hold: its unmasking rule and PRISM's remask counts.
TASK_SAMPLER_FIELDS: Tuple[str, ...] = ("unmasking",) + REMASK_COUNT_FIELDS


@dataclass(frozen=True)
class MethodPreset:
    """One named sampling method.

    Args:
        name (`str`): The name it is looked up by (``"prism"``, ``"remdm-conf"``, ...).
        remasking (`str`): The scheduler's remasking rule.
        description (`str`): One line for listings (``prism-hf info``) and docs.
        unmasking (`str`, *optional*): The unmasking rule the method fixes (the vanilla baselines); `None` takes the
            task's.
        uses_remask_counts (`bool`): Whether the method takes the task's remask counts ([`REMASK_COUNT_FIELDS`]):
            PRISM and the baselines that remask as many tokens as PRISM does.
        settings (`Mapping[str, Any]`): Further scheduler arguments the method fixes (e.g. ``eta`` of ``remdm-cap``).
    """

    name: str
    remasking: str
    description: str = ""
    unmasking: Optional[str] = None
    uses_remask_counts: bool = False
    settings: Mapping[str, Any] = field(default_factory=dict)

    def scheduler_kwargs(self, task: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """The [`PrismScheduler`] arguments of this method for a task.

        Args:
            task (`Mapping[str, Any]`, *optional*): The task's sampler settings, keys among
                [`TASK_SAMPLER_FIELDS`] (its unmasking rule and PRISM's remask counts). Only the keys it holds are
                passed on; the scheduler's defaults fill the rest.

        Returns:
            `dict`: ``remasking``, ``unmasking`` (when the method or the task sets one), the task's remask counts
            (for a method that uses them) and the method's own ``settings``, in that order.
        """
        task = dict(task or {})
        unknown = sorted(set(task) - set(TASK_SAMPLER_FIELDS))
        if unknown:
            raise ValueError(
                f"task={task!r} has {unknown}, which are not task sampler settings; valid keys: {list(TASK_SAMPLER_FIELDS)} "
                "(pass other scheduler arguments to `scheduler(...)` directly)."
            )
        kwargs: Dict[str, Any] = {"remasking": self.remasking}
        unmasking = self.unmasking if self.unmasking is not None else task.get("unmasking")
        if unmasking is not None:
            kwargs["unmasking"] = unmasking
        if self.uses_remask_counts:
            kwargs.update({key: task[key] for key in REMASK_COUNT_FIELDS if key in task})
        kwargs.update(self.settings)
        return kwargs

    def scheduler(self, task: Optional[Mapping[str, Any]] = None, **scheduler_kwargs: Any):
        """A [`PrismScheduler`] for this method and task; ``scheduler_kwargs`` (``temperature``, ``block_length``,
        ...) are added and must not repeat what the method and task set."""
        from .scheduling_prism import PrismScheduler

        kwargs = self.scheduler_kwargs(task)
        clash = sorted(set(kwargs) & set(scheduler_kwargs))
        if clash:
            raise ValueError(
                f"scheduler_kwargs={ {key: scheduler_kwargs[key] for key in clash} } repeat what method {self.name!r} "
                f"and its task set ({ {key: kwargs[key] for key in clash} }); pass them in the task settings instead."
            )
        return PrismScheduler(**kwargs, **scheduler_kwargs)


METHOD_PRESETS: Registry[MethodPreset] = Registry(
    "sampling method", "method",
    how_to_add="Add one with `prism_hf.sampling.presets.register_method_preset(MethodPreset(...))`.",
)

#: Earlier names of the text evaluation -> their names in [`METHOD_PRESETS`] (removed in prism_hf 0.3.0).
DEPRECATED_METHOD_NAMES: Dict[str, str] = {
    "remdm_cap": "remdm-cap",
    "remdm_rescale": "remdm-rescale",
    "remdm_conf": "remdm-conf",
    "remdm_loop": "remdm-loop",
    "confidence": "confidence-remask",
    "random": "random-remask",
}


def register_method_preset(preset: MethodPreset, *, overwrite: bool = False) -> MethodPreset:
    """Add ``preset`` to [`METHOD_PRESETS`] under ``preset.name``."""
    if not isinstance(preset, MethodPreset):
        raise TypeError(f"preset={preset!r} is not a MethodPreset.")
    return METHOD_PRESETS.register(preset.name, preset, overwrite=overwrite)


def get_method_preset(name: str) -> MethodPreset:
    """The preset registered as ``name``; an earlier name of the text evaluation ([`DEPRECATED_METHOD_NAMES`]) warns
    (`FutureWarning`) and resolves; an unknown one raises a `ValueError` listing the valid names. Code that never
    took the earlier names looks names up with ``METHOD_PRESETS.lookup(name)``."""
    if isinstance(name, str) and name in DEPRECATED_METHOD_NAMES and name not in METHOD_PRESETS:
        warn_deprecated(name, DEPRECATED_METHOD_NAMES[name], "sampling method names")
        name = DEPRECATED_METHOD_NAMES[name]
    return METHOD_PRESETS.lookup(name)


def method_names() -> Tuple[str, ...]:
    """The registered method names, in registration order (for ``choices=`` of a command line)."""
    return tuple(METHOD_PRESETS)


for _preset in (
    MethodPreset("vanilla", "none", "Vanilla MDM: no remasking, the task's unmasking rule."),
    *(
        MethodPreset(f"vanilla-{rule}", "none", f"Vanilla MDM: no remasking, unmasking {order}.", unmasking=rule)
        for rule, order in (("confidence", "the most confident first"), ("margin", "the largest top-2 margin first"),
                            ("entropy", "the lowest entropy first"), ("random", "in random order"))
    ),
    MethodPreset("remdm-cap", "remdm_cap", "ReMDM-cap with eta 0.04 (the PRISM paper's text baseline).",
                 settings={"eta": 0.04}),
    MethodPreset("remdm-rescale", "remdm_rescale", "ReMDM-rescale, public defaults."),
    MethodPreset("remdm-conf", "remdm_conf", "ReMDM-conf: confidence-weighted remasking, public defaults."),
    MethodPreset("remdm-loop", "remdm_loop", "ReMDM-loop, public defaults."),
    MethodPreset("confidence-remask", "confidence", "PRISM's remask counts, lowest unmasking confidence first.",
                 uses_remask_counts=True),
    MethodPreset("random-remask", "random", "PRISM's remask counts, tokens chosen at random.", uses_remask_counts=True),
    MethodPreset("prism", "prism", "PRISM: remask the tokens of lowest learned quality.", uses_remask_counts=True),
):
    register_method_preset(_preset)
del _preset
