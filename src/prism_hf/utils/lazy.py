"""Lazy exports for package ``__init__`` modules: heavy pieces (diffusers, the transformers Trainer) load on first
use, so importing the package stays as light as the model itself."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Tuple

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Dict[str, str], namespace: Dict[str, Any]) -> Tuple[Callable, Callable]:
    """The module-level ``__getattr__`` and ``__dir__`` of a package whose names ``exports`` maps to the absolute
    module that defines them; a name is imported on first access and then cached in ``namespace`` (the package's
    ``globals()``)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> List[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
