"""``prism_hf.scheduling_prism`` moved to ``prism_hf.sampling.scheduling_prism``; this path stays an alias of that module (the same module
object, so imports, ``isinstance`` checks and patches through either path agree)."""

import sys

from .sampling import scheduling_prism as _module

sys.modules[__name__] = _module
