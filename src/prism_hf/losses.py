"""``prism_hf.losses`` moved to ``prism_hf.training.losses``; this path stays an alias of that module (the same module
object, so imports, ``isinstance`` checks and patches through either path agree)."""

import sys

from .training import losses as _module

sys.modules[__name__] = _module
