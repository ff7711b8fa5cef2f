"""Import the published model code in ``../shared/reference_models/`` as test oracles.

That folder holds the modeling code that ``trust_remote_code=True`` downloads for LLaDA and Dream (and Fast-dLLM's
samplers). It is never copied into the project: tests and benchmarks import it from that path, and skip with a clear
reason when it is absent (a user's checkout outside this repository's CI). ``PRISM_REFERENCE_MODELS`` overrides the
path.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

REFERENCE_DIR = Path(
    os.environ.get("PRISM_REFERENCE_MODELS", Path(__file__).resolve().parents[2] / "shared" / "reference_models")
)

requires_reference = pytest.mark.skipif(
    not REFERENCE_DIR.is_dir(),
    reason=f"the published model code is not at {REFERENCE_DIR} (set PRISM_REFERENCE_MODELS to its folder)",
)


def load_reference_package(name: str) -> ModuleType:
    """Import ``REFERENCE_DIR/<name>`` (a package with relative imports) as ``prism_reference_<name>``.

    Args:
        name (`str`): Folder name under the reference directory, e.g. ``"llada"`` or ``"dream"``.

    Returns:
        The imported package; its submodules (``modeling_llada``, ...) are importable as
        ``prism_reference_<name>.<module>``.
    """
    package_name = f"prism_reference_{name}"
    if package_name in sys.modules:
        return sys.modules[package_name]
    folder = REFERENCE_DIR / name
    if not (folder / "__init__.py").is_file():
        pytest.skip(f"no published model package at {folder}")
    # The published code registers its classes with the Auto classes on import ("llada" with AutoConfig, ...), which
    # would shadow the native ports for the rest of the test session: keep the registries as they were.
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    saved = [(mapping, dict(mapping._extra_content)) for mapping in (CONFIG_MAPPING, MODEL_MAPPING)]
    spec = importlib.util.spec_from_file_location(package_name, folder / "__init__.py", submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[package_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[package_name]
        raise
    finally:
        for mapping, extra in saved:
            mapping._extra_content.clear()
            mapping._extra_content.update(extra)
    return module
