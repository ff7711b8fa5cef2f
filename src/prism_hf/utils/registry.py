"""One small registry for everything prism_hf looks up by name: quality heads, backbone families, unmasking and
remasking rules, remask schedules, sampling methods.

A [`Registry`] is a read-only mapping from names to entries. Entries are added with [`Registry.register`] (or the
class decorator [`Registry.decorator`]); [`Registry.lookup`] returns one and, for an unknown name, raises an error
that names the argument, the valid names and how to add one.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Generic, Iterator, Mapping, Optional, Type, TypeVar

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Mapping[str, T], Generic[T]):
    """Name -> entry, read-only from outside except through [`register`].

    Args:
        kind (`str`): What an entry is, for messages ("quality head", "unmasking rule").
        argument (`str`): The argument that takes a name ("head_type", "unmasking"), for messages.
        how_to_add (`str`): One sentence on how to register a new entry, appended to the unknown-name error.
        error_cls (`type`): The exception [`lookup`] raises for an unknown name (default `ValueError`).
        on_register (`Callable[[str, T], None]`, *optional*): Called with ``(name, entry)`` after each registration
            (e.g. to stamp the name on a class).
    """

    def __init__(self, kind: str, argument: str, how_to_add: str = "", error_cls: Type[Exception] = ValueError,
                 on_register: Optional[Callable[[str, T], None]] = None):
        self.kind = kind
        self.argument = argument
        self.how_to_add = how_to_add
        self.error_cls = error_cls
        self.on_register = on_register
        self._entries: Dict[str, T] = {}

    # ----- the mapping ------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {sorted(self._entries)})"

    def __setitem__(self, name: str, entry: T) -> None:
        # The registries of the previous release were plain dicts; item assignment keeps working for one release.
        warnings.warn(f"Assigning into the {self.kind} registry is deprecated; use its register function (or "
                      "`Registry.register`).", FutureWarning, stacklevel=2)
        self.register(name, entry, overwrite=True)

    # ----- registering and looking up ---------------------------------------------------------------
    def register(self, name: str, entry: T, *, overwrite: bool = False) -> T:
        """Add ``entry`` under ``name``. Registering the same entry twice is a no-op; another entry under a taken
        name needs ``overwrite=True``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"A {self.kind} needs a non-empty string name, got {name!r}.")
        current = self._entries.get(name)
        if current is not None and current is not entry and current != entry and not overwrite:
            raise ValueError(f"{self.kind} {name!r} is already registered to {_describe(current)}; pass "
                             "overwrite=True to replace it.")
        self._entries[name] = entry
        if self.on_register is not None:
            self.on_register(name, entry)
        return entry

    def decorator(self, name: str, *, overwrite: bool = False) -> Callable[[T], T]:
        """Class decorator: ``@registry.decorator("name")`` registers the class under ``name``."""

        def register(entry: T) -> T:
            return self.register(name, entry, overwrite=overwrite)

        return register

    def pop(self, name: str, *default: Any) -> T:
        """Deprecated dict API of the previous release's registries: remove ``name`` and return its entry (or
        ``default``; a missing name without one raises `KeyError`). Use [`unregister`]."""
        from .deprecation import warn_deprecated

        warn_deprecated(f"{self.kind} registry .pop(name)", ".unregister(name)", f"the {self.kind} registry")
        if name in self._entries:
            return self._entries.pop(name)
        if default:
            return default[0]
        raise KeyError(name)

    def __delitem__(self, name: str) -> None:
        self._deprecated_dict_api("del registry[name]", ".unregister(name)")
        del self._entries[name]

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Deprecated dict API: register every item (overwriting)."""
        self._deprecated_dict_api(".update(...)", ".register(name, entry)")
        for name, entry in dict(*args, **kwargs).items():
            self.register(name, entry, overwrite=True)

    def setdefault(self, name: str, entry: T) -> T:
        """Deprecated dict API: register ``entry`` unless ``name`` is taken; the entry under ``name``."""
        self._deprecated_dict_api(".setdefault(name, entry)", ".register(name, entry)")
        return self._entries[name] if name in self._entries else self.register(name, entry)

    def copy(self) -> Dict[str, T]:
        """A plain-dict copy of the entries (as the dicts of 0.1.0 answered)."""
        return dict(self._entries)

    def _deprecated_dict_api(self, old: str, new: str) -> None:
        from .deprecation import warn_deprecated

        warn_deprecated(f"{self.kind} registry {old}", new, f"the {self.kind} registry", stacklevel=4)

    def unregister(self, name: str) -> Optional[T]:
        """Remove ``name`` (tests and plug-ins that clean up after themselves); returns what was there."""
        return self._entries.pop(name, None)

    def lookup(self, name: Any, hint: str = "") -> T:
        """The entry under ``name``; an unknown name raises ``error_cls`` naming the argument and the valid names."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            hint = f" {hint}" if hint else ""
            add = f" {self.how_to_add}" if self.how_to_add else ""
            raise self.error_cls(f"{self.argument}={name!r} is not a known {self.kind}{hint}; valid names: "
                                 f"{sorted(self._entries)}.{add}") from None

    def snapshot(self) -> Dict[str, T]:
        """A plain-dict copy of the entries."""
        return dict(self._entries)


def _describe(entry: Any) -> str:
    return getattr(entry, "__name__", None) or getattr(entry, "name", None) or repr(entry)
