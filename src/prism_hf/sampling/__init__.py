"""Sampling: the scheduler, the pipeline, the unmasking and remasking rules they apply, and the table of named
methods (`presets`).

The scheduler and the pipeline (which import diffusers) load on first use, so that reading the method table
(``prism_hf.sampling.presets``, e.g. for a command line's choices) stays cheap.
"""

from ..utils.lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, _LAZY_EXPORTS, globals())

__all__ = list(_LAZY_EXPORTS)
