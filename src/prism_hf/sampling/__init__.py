"""Sampling: the scheduler, the pipeline, and the unmasking and remasking rules they apply."""

from .pipeline_prism import PrismPipeline, PrismPipelineOutput
from .remasking import register_remask_schedule, register_remasking_rule
from .scheduling_prism import PrismScheduler, PrismSchedulerOutput
from .unmasking import register_unmasking_rule

__all__ = [
    "PrismPipeline",
    "PrismPipelineOutput",
    "PrismScheduler",
    "PrismSchedulerOutput",
    "register_remask_schedule",
    "register_remasking_rule",
    "register_unmasking_rule",
]
