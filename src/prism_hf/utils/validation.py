"""Argument checks shared by the configurations of the native model ports (`prism_hf.models`).

Each check raises a `ValueError` that names the argument, its value and what is valid, so that a bad
``config.json`` fails when it is read, not deep inside a forward.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

__all__ = ["is_int", "is_real", "check_positive_int", "check_positive_float", "check_probability", "check_supported"]


def is_int(value: Any) -> bool:
    """`True` for an integer that is not a `bool` (``True`` is an `int` in Python, never a valid count here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """`True` for an `int` or `float` that is not a `bool`."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_positive_int(name: str, value: Any, optional: bool = False) -> None:
    """Raise unless ``value`` is an int > 0 (or `None` when ``optional``).

    Args:
        name (`str`): The argument, for the message.
        value: Its value.
        optional (`bool`): Whether `None` is valid.
    """
    if optional and value is None:
        return
    if not is_int(value) or value <= 0:
        allowed = "a positive int or None" if optional else "a positive int"
        raise ValueError(f"{name}={value!r} must be {allowed}.")


def check_positive_float(name: str, value: Any, example: Optional[str] = None) -> None:
    """Raise unless ``value`` is a number > 0; ``example`` (e.g. ``"500000.0"``) is appended to the message."""
    if not is_real(value) or not value > 0:
        hint = f", e.g. {example}" if example else ""
        raise ValueError(f"{name}={value!r} must be a positive float{hint}.")


def check_probability(name: str, value: Any) -> None:
    """Raise unless ``value`` is a number in ``[0, 1)`` (a dropout rate)."""
    if not is_real(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name}={value!r} must be a float in [0, 1).")


def check_supported(name: str, value: Any, supported: Iterable[Any], implementation: str, why: str = "") -> None:
    """Raise unless ``value`` is one of ``supported``: the option is refused rather than silently computed otherwise.

    Args:
        name (`str`): The option, for the message.
        value: Its value.
        supported (`Iterable`): The values the implementation accepts.
        implementation (`str`): What refuses it, e.g. ``"the native LLaDA port"``.
        why (`str`, *optional*): Why the other values are refused, shown in parentheses.
    """
    supported = list(supported)
    if value not in supported:
        reason = f" ({why})" if why else ""
        raise ValueError(f"{name}={value!r} is not implemented by {implementation}{reason}; supported values: {supported}.")
