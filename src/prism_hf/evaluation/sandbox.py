"""Execute one untrusted Python program in a separate, contained process.

The guarantees and their limits are documented in ``docs/code_eval.md``; in short, every program gets a wall-clock
limit, an address-space limit, a process limit, no network, its own temporary working directory (removed afterwards)
and, when the host allows it (root, or unprivileged user namespaces), its own pid, network and mount namespaces and a
fresh unprivileged uid. Whatever the program started is killed before :meth:`Sandbox.run` returns.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


SANDBOX_STATUSES = ("passed", "failed", "timeout", "memory", "error")
_CHILD = Path(__file__).with_name("_sandbox_child.py")
_MEMORY_EXIT_CODE = 86  # kept equal to _sandbox_child.MEMORY_EXIT_CODE (that file is never imported here)
_BACKSTOP_S = 15.0  # the supervisor enforces the limit itself; this only catches a supervisor that hangs


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the program): e.g. the interpreter could not be started."""


@dataclass
class SandboxResult:
    """Outcome of one sandboxed program.

    Args:
        status (`str`): one of `"passed"` (exited with status 0 in time), `"failed"` (raised, including a failed
            `assert` or a syntax error, or exited non-zero), `"timeout"` (wall-clock or CPU limit), `"memory"`
            (`MemoryError` under the memory limit) or `"error"` (killed by a signal: a crash). When the sandbox
            itself fails, :meth:`Sandbox.run` raises :class:`SandboxError` instead.
        duration (`float`): seconds the program ran (wall clock).
        stdout (`str`), stderr (`str`): the first `max_output_bytes` of each stream, with a marker when cut.
        returncode (`int` or `None`): exit status of the program interpreter, `None` on timeout or signal.
        isolation (`tuple[str, ...]`): the isolation layers that were active, e.g. `("rlimits", "pid_namespace",
            "network_namespace", "unprivileged_uid", "private_tmp", "audit_hook")`.
        notes (`tuple[str, ...]`): why a layer could not be set up on this host, if any.
    """

    status: str
    duration: float
    stdout: str = ""
    stderr: str = ""
    returncode: int | None = None
    isolation: tuple[str, ...] = field(default_factory=tuple)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _positive(name, value, kind=float):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"`{name}` must be a positive {kind.__name__}, got {value!r}.")
    if kind is int and int(value) != value:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
    return kind(value)


def _read_head(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError:
        return ""
    text = data[:limit].decode("utf-8", errors="replace")
    return text + "\n[... truncated]" if len(data) > limit else text


class Sandbox:
    """Runs untrusted Python programs, one process tree per program.

    Args:
        timeout (`float`, defaults to 3.0): wall-clock limit in seconds for one program.
        memory_limit_mb (`int`, defaults to 1024): address-space limit (`RLIMIT_AS`) per process, in MiB.
        max_processes (`int`, defaults to 32): processes the program may have alive at once (`RLIMIT_NPROC` of its
            own fresh uid when running as root; on top of the processes the user already runs otherwise).
        max_output_bytes (`int`, defaults to 8192): bytes of stdout / stderr kept in the result.
        max_file_size_mb (`int`, defaults to 64): largest file the program may write (`RLIMIT_FSIZE`), including its
            captured stdout / stderr; also the size of its private `/tmp`.
        use_namespaces (`bool`, defaults to `True`): use pid / network / mount namespaces when the host allows.
        in_process_guard (`bool`, defaults to `True`): also install the in-interpreter audit hook (no sockets, no
            new programs, no signals, no writes outside the working directory).
        uid (`int`, *optional*): uid to run programs as when root; by default a fresh uid per program.
        env (`dict[str, str]`, *optional*): extra environment variables for the program (its environment is otherwise
            minimal: `PATH`, `LANG`, `HOME` and `TMPDIR` set to its working directory, `PYTHONHASHSEED=0`).
        python (`str`, *optional*): interpreter for the programs; defaults to `sys.executable`.
    """

    def __init__(
        self,
        timeout: float = 3.0,
        memory_limit_mb: int = 1024,
        max_processes: int = 32,
        max_output_bytes: int = 8192,
        max_file_size_mb: int = 64,
        use_namespaces: bool = True,
        in_process_guard: bool = True,
        uid: int | None = None,
        python: str | None = None,
        env: dict[str, str] | None = None,
    ):
        self.timeout = _positive("timeout", timeout)
        self.memory_limit_mb = _positive("memory_limit_mb", memory_limit_mb, int)
        self.max_processes = _positive("max_processes", max_processes, int)
        self.max_output_bytes = _positive("max_output_bytes", max_output_bytes, int)
        self.max_file_size_mb = _positive("max_file_size_mb", max_file_size_mb, int)
        if uid is not None and (isinstance(uid, bool) or not isinstance(uid, int) or uid <= 0):
            raise ValueError(f"`uid` must be a positive int (a non-root uid) or None, got {uid!r}.")
        self.use_namespaces = bool(use_namespaces)
        self.in_process_guard = bool(in_process_guard)
        self.uid = uid
        if env is not None and not (
            isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str) and k for k, v in env.items())
        ):
            raise ValueError(f"`env` must map variable names to str values, got {env!r:.200}.")
        self.env = dict(env or {})
        self.python = python or sys.executable
        if not sys.platform.startswith("linux"):
            raise NotImplementedError(f"the sandbox needs Linux (namespaces, /proc, prctl), not {sys.platform!r}.")
        if not os.access(self.python, os.X_OK):
            raise ValueError(f"`python` must be an executable interpreter, got {self.python!r}.")

    def _config(self, control: Path, workdir: Path) -> dict:
        # what the program interpreter must be able to read; the parent's packages only when it is our interpreter
        needed = [self.python, os.path.realpath(self.python)]
        extra_sys_path = []
        if self.python == sys.executable:
            needed += [sys.prefix, sys.base_prefix]
            extra_sys_path = [p for p in site.getsitepackages() if os.path.isdir(p)]
        return {
            "workdir": str(workdir),
            "stdout_path": str(control / "stdout"),
            "stderr_path": str(control / "stderr"),
            "result_path": str(control / "result.json"),
            "timeout": self.timeout,
            "memory_limit_bytes": self.memory_limit_mb * 2**20,
            "max_processes": self.max_processes,
            "max_file_size_bytes": self.max_file_size_mb * 2**20,
            "tmpfs_size_bytes": self.max_file_size_mb * 2**20,
            "use_namespaces": self.use_namespaces,
            "in_process_guard": self.in_process_guard,
            "uid": self.uid,
            "python": self.python,
            "needed_paths": needed + extra_sys_path,
            "extra_sys_path": extra_sys_path,
            "runner_source": _CHILD.read_text(),
            "env": {
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "LANG": "C.UTF-8",
                "HOME": str(workdir),
                "TMPDIR": str(workdir),
                "PYTHONHASHSEED": "0",
                "OMP_NUM_THREADS": "1",
                **self.env,
            },
        }

    def run(self, program: str) -> SandboxResult:
        """Execute `program` (Python source) and return its :class:`SandboxResult`.

        The program runs as `__main__` in a fresh interpreter whose working directory is a new temporary directory
        holding only `program.py`; it passes when it exits with status 0 within the limits.
        """
        if not isinstance(program, str):
            raise TypeError(f"`program` must be Python source as a str, got {type(program).__name__}.")
        control = Path(tempfile.mkdtemp(prefix="prism-sandbox-"))
        try:
            # others may traverse (not list) the control folder, to reach the working directory by its path
            os.chmod(control, 0o711)
            workdir = control / "work"
            workdir.mkdir(mode=0o700)
            (workdir / "program.py").write_text(program, encoding="utf-8")
            os.chmod(workdir / "program.py", 0o644)
            config_path = control / "config.json"
            config_path.write_text(json.dumps(self._config(control, workdir)))
            os.chmod(config_path, 0o600)
            return self._supervise(control, config_path)
        finally:
            shutil.rmtree(control, ignore_errors=True)
            if control.exists():  # the program may have removed its own permissions on what it created
                subprocess.run(["chmod", "-R", "u+rwx", str(control)], check=False, capture_output=True)
                shutil.rmtree(control, ignore_errors=True)

    def _supervise(self, control: Path, config_path: Path) -> SandboxResult:
        start = time.monotonic()
        with open(control / "supervisor.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-B", str(_CHILD), "supervise", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )
            try:
                proc.wait(timeout=self.timeout + _BACKSTOP_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # its namespace init dies with it (parent-death signal)
                proc.wait()
        stdout = _read_head(control / "stdout", self.max_output_bytes)
        stderr = _read_head(control / "stderr", self.max_output_bytes)
        try:
            report = json.loads((control / "result.json").read_text())
        except (OSError, ValueError):
            report = {"outcome": "error", "message": _read_head(control / "supervisor.log", self.max_output_bytes)}
        outcome = report.get("outcome")
        if outcome == "error":
            # not the program's fault: scoring it as a failure would silently turn a broken setup into pass@k = 0
            raise SandboxError(f"the sandbox could not run the program: {report.get('message', '')}")
        returncode = report.get("code")
        if outcome == "timeout":
            status = "timeout"
        elif outcome == "exited":
            status = {0: "passed", _MEMORY_EXIT_CODE: "memory"}.get(returncode, "failed")
        elif outcome == "signaled" and report.get("signal") == signal.SIGXCPU:
            status = "timeout"
        else:
            status = "error"
            stderr += f"\n[killed by signal {report.get('signal')}]"
        return SandboxResult(
            status=status,
            duration=float(report.get("duration", time.monotonic() - start)),
            stdout=stdout,
            stderr=stderr,
            returncode=returncode,
            isolation=tuple(report.get("isolation", ())),
            notes=tuple(report.get("notes", ())),
        )


def run_in_sandbox(program: str, **sandbox_kwargs) -> SandboxResult:
    """Execute one program with a :class:`Sandbox` built from `sandbox_kwargs` (see its arguments)."""
    return Sandbox(**sandbox_kwargs).run(program)
