"""``prism_hf.pipeline_prism`` moved to ``prism_hf.sampling.pipeline_prism``; this path stays an alias of that module (the same module
object, so imports, ``isinstance`` checks and patches through either path agree)."""

import sys

from .sampling import pipeline_prism as _module

sys.modules[__name__] = _module
