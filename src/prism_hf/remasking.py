"""``prism_hf.remasking`` moved to ``prism_hf.sampling.remasking``; this path stays an alias of that module (the same module
object, so imports, ``isinstance`` checks and patches through either path agree)."""

import sys

from .sampling import remasking as _module

sys.modules[__name__] = _module
