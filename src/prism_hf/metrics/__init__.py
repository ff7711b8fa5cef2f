"""`evaluate` metric modules shipped with prism_hf, loadable offline by path.

Example:

```python
import evaluate
from prism_hf.metrics import CODE_EVAL_SANDBOXED

code_eval = evaluate.load(CODE_EVAL_SANDBOXED)
scores, outcomes = code_eval.compute(predictions=[["def f():\\n    return 1"]], references=["assert f() == 1"], k=[1])
```
"""

from pathlib import Path


METRICS_DIR = Path(__file__).parent
CODE_EVAL_SANDBOXED = str(METRICS_DIR / "code_eval_sandboxed")

__all__ = ["CODE_EVAL_SANDBOXED", "METRICS_DIR"]
