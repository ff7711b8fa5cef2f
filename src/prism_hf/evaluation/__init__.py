"""Execution-based evaluation: a process sandbox for untrusted programs and the pass@k metric."""

from .sandbox import SANDBOX_STATUSES, Sandbox, SandboxResult, run_in_sandbox


__all__ = ["SANDBOX_STATUSES", "Sandbox", "SandboxResult", "run_in_sandbox"]
