"""``prism_hf.training_args`` moved to ``prism_hf.training.training_args``; this path stays an alias of that module (the same module
object, so imports, ``isinstance`` checks and patches through either path agree)."""

import sys

from .training import training_args as _module

sys.modules[__name__] = _module
