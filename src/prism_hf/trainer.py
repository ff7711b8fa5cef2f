"""``prism_hf.trainer`` moved to ``prism_hf.training.trainer``; this path stays an alias of that module (the same module
object, so imports, ``isinstance`` checks and patches through either path agree)."""

import sys

from .training import trainer as _module

sys.modules[__name__] = _module
