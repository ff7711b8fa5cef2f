"""``prism_hf.unmasking`` moved to ``prism_hf.sampling.unmasking``; this path stays an alias of that module (the same module
object, so imports, ``isinstance`` checks and patches through either path agree)."""

import sys

from .sampling import unmasking as _module

sys.modules[__name__] = _module
