"""Renamed arguments keep working for one release, with a `FutureWarning` that names the new spelling."""

from __future__ import annotations

import warnings
from typing import Any, Dict

__all__ = ["REMOVAL_VERSION", "warn_deprecated", "rename_kwarg"]

#: The release in which names deprecated now are removed.
REMOVAL_VERSION = "0.3.0"

_MISSING = object()


def warn_deprecated(old: str, new: str, where: str, stacklevel: int = 3) -> None:
    """Warn that ``old`` (in ``where``) is deprecated in favour of ``new``."""
    warnings.warn(f"{where}: `{old}` is deprecated; use `{new}`. `{old}` will be removed in prism_hf "
                  f"{REMOVAL_VERSION}.", FutureWarning, stacklevel=stacklevel)


def rename_kwarg(kwargs: Dict[str, Any], old: str, new: str, where: str, current: Any = _MISSING,
                 convert=None, stacklevel: int = 4) -> Any:
    """Pop the deprecated ``old`` from ``kwargs`` and return the value to use for ``new``.

    Args:
        kwargs (`dict`): The caller's extra keyword arguments (``old`` is removed from it).
        old (`str`), new (`str`): The deprecated and the current argument names.
        where (`str`): The function or class, for the message.
        current: The value the caller passed under ``new`` (leave unset when ``new`` was not passed).
        convert (`Callable`, *optional*): Maps an old value to the new argument's meaning (e.g. ``lambda m: ~m``
            when the old name meant the opposite).
        stacklevel (`int`, defaults to 4): The warning's stack level; the default points at the caller of the
            function that calls ``rename_kwarg``. A helper between them adds one.

    Returns:
        The value for ``new``: ``current`` if ``old`` was not passed, else the (converted) old value. Passing both
        raises a `TypeError` naming both.
    """
    if old not in kwargs:
        return None if current is _MISSING else current
    value = kwargs.pop(old)
    if current is not _MISSING and current is not None:
        raise TypeError(f"{where}: pass `{new}` only; `{old}` is its deprecated name and both were given.")
    warn_deprecated(old, new, where, stacklevel=stacklevel)
    return convert(value) if convert is not None and value is not None else value
