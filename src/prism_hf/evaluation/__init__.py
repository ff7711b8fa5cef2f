"""Execution-based evaluation: a process sandbox for untrusted programs and the pass@k metric."""

from .code_eval import (
    PassAtKResult,
    ProgramOutcome,
    estimate_pass_at_k,
    execute_programs,
    humaneval_program,
    humaneval_programs,
    pass_at_k,
    pass_at_k_from_programs,
)
from .classification import binary_auroc
from .sandbox import SANDBOX_STATUSES, Sandbox, SandboxError, SandboxResult, run_in_sandbox


__all__ = [
    "binary_auroc",
    "SANDBOX_STATUSES",
    "PassAtKResult",
    "ProgramOutcome",
    "Sandbox",
    "SandboxError",
    "SandboxResult",
    "estimate_pass_at_k",
    "execute_programs",
    "humaneval_program",
    "humaneval_programs",
    "pass_at_k",
    "pass_at_k_from_programs",
    "run_in_sandbox",
]
