"""``prism_hf.configuration_prism`` moved to ``prism_hf.modeling.configuration_prism``; this path stays an alias of that module (the same module
object, so imports, ``isinstance`` checks and patches through either path agree)."""

import sys

from .modeling import configuration_prism as _module

sys.modules[__name__] = _module
