"""``prism_hf.families`` moved to ``prism_hf.modeling.families``; this path stays an alias of that module (the same module
object, so imports, ``isinstance`` checks and patches through either path agree)."""

import sys

from .modeling import families as _module

sys.modules[__name__] = _module
