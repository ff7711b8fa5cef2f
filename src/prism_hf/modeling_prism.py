"""``prism_hf.modeling_prism`` moved to ``prism_hf.modeling.modeling_prism``; this path stays an alias of that module (the same module
object, so imports, ``isinstance`` checks and patches through either path agree)."""

import sys

from .modeling import modeling_prism as _module

sys.modules[__name__] = _module
