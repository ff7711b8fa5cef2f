"""Sampling: the scheduler, the pipeline, the unmasking and remasking rules they apply, and the table of named
methods (`presets`).

The scheduler and the pipeline (which import diffusers) load on first use, so that reading the method table
(``prism_hf.sampling.presets``, e.g. for a command line's choices) stays cheap.
"""

import importlib

_LAZY_EXPORTS = {
    "PrismPipeline": "prism_hf.sampling.pipeline_prism",
    "PrismPipelineOutput": "prism_hf.sampling.pipeline_prism",
    "PrismScheduler": "prism_hf.sampling.scheduling_prism",
    "PrismSchedulerOutput": "prism_hf.sampling.scheduling_prism",
    "register_remask_schedule": "prism_hf.sampling.remasking",
    "register_remasking_rule": "prism_hf.sampling.remasking",
    "register_unmasking_rule": "prism_hf.sampling.unmasking",
    "METHOD_PRESETS": "prism_hf.sampling.presets",
    "MethodPreset": "prism_hf.sampling.presets",
    "get_method_preset": "prism_hf.sampling.presets",
    "register_method_preset": "prism_hf.sampling.presets",
    "sample_tokens": "prism_hf.utils.token_sampling",
}


def __getattr__(name):
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'prism_hf.sampling' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY_EXPORTS))


__all__ = list(_LAZY_EXPORTS)
