"""Execute one untrusted Python program in a separate, contained process.

The guarantees and their limits are documented in ``docs/code_eval.md``; in short, every program gets a wall-clock
limit, memory limits (per process, and for its whole process tree through a memory cgroup where the host allows),
a process limit, an open-file limit, no network, its own temporary working directory (removed afterwards) and, where
the host allows it (root, or unprivileged user namespaces), its own pid, network, IPC and mount namespaces with a
read-only view of the file system, a fresh unprivileged uid, no capabilities, ``no_new_privs`` and a seccomp filter.
Whatever the program started is killed before :meth:`Sandbox.run` returns. A program passes only when it ran to its
end: the runner reports a per-run nonce after ``exec`` of the whole program returned, and nothing the program does on
its way out (exit status, ``SystemExit``, ``os._exit``, ``atexit``) can stand in for that record.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


SANDBOX_STATUSES = ("passed", "failed", "timeout", "memory", "error")
# Every isolation layer `SandboxResult.isolation` may list, with what it does (docs/code_eval.md has the details).
SANDBOX_LAYERS = {
    "rlimits": "address-space, file-size, CPU-time, process and open-file limits per process",
    "own_session": "a new session; without a pid namespace a subreaper kills every descendant",
    "minimal_environment": "the supervisor and the program start with a minimal environment, not the caller's",
    "memory_cgroup": "a memory cgroup bounds the whole process tree (tmpfs, memfd and shared memory included)",
    "user_namespace": "a user namespace (non-root callers): namespaces without privileges on the host",
    "pid_namespace": "a pid namespace: the program sees only its own processes, all killed with its init",
    "network_namespace": "a network namespace with no interface up: no network, not even loopback",
    "ipc_namespace": "an IPC namespace: System V and POSIX IPC objects die with the sandbox",
    "mount_namespace": "a private mount namespace",
    "private_proc": "a /proc of the pid namespace (no other process of the host is visible)",
    "unprivileged_uid": "as root: a fresh uid per program, with no groups",
    "read_only_root": "every mount read-only inside the sandbox (the host is untouched)",
    "private_workdir": "the working directory is a fresh size-limited tmpfs",
    "private_tmp": "/tmp, /var/tmp and /dev/shm are fresh size-limited tmpfs",
    "no_new_privs": "no_new_privs: execve can never grant privileges",
    "no_capabilities": "no capabilities, empty bounding set, locked securebits (also as uid 0 of a user namespace)",
    "seccomp": "a seccomp filter: no new programs, ptrace, mounts, namespaces, memfd, SysV IPC, io_uring, network sockets",
    "audit_hook": "an in-interpreter audit hook (second layer for Python code)",
}
_CHILD = Path(__file__).with_name("_sandbox_child.py")
# Kept equal to the constants of _sandbox_child.py (that file is never imported here).
_MEMORY_EXIT_CODE = 86
_BACKSTOP_S = 15.0  # the supervisor enforces the limit itself; this only catches a supervisor that hangs
_SUPERVISOR_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


class SandboxError(RuntimeError):
    """The sandbox itself failed (not the program): e.g. the interpreter could not be started."""


@dataclass
class SandboxResult:
    """Outcome of one sandboxed program.

    Args:
        status (`str`): one of `"passed"` (the program ran to its end within the limits: the runner's completion
            record arrived after `exec` of the whole program returned), `"failed"` (it raised, including a failed
            `assert`, a `SyntaxError` or `SystemExit`, or it ended without the record: `os._exit`, a killed runner;
            also a program that is not valid UTF-8 text, which is not run), `"timeout"` (wall-clock or CPU limit),
            `"memory"` (`MemoryError` under the address-space limit, or killed by the memory cgroup) or `"error"`
            (killed by a signal: a crash). When the sandbox itself fails, :meth:`Sandbox.run` raises
            :class:`SandboxError` instead.
        duration (`float`): seconds the program ran (wall clock).
        stdout (`str`), stderr (`str`): the first `max_output_bytes` of each stream, with a marker when cut.
        returncode (`int` or `None`): exit status of the program interpreter, `None` on timeout or signal. It does
            not decide the status: a program that exits with status 0 before its end has failed.
        isolation (`tuple[str, ...]`): the isolation layers that were active (names in `SANDBOX_LAYERS`), e.g.
            `("rlimits", "memory_cgroup", "pid_namespace", ..., "seccomp", "audit_hook")`.
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


def unrunnable_reason(program) -> str | None:
    """Why `program` cannot be run as Python source (not a `str`, or not encodable as UTF-8), else `None`."""
    if not isinstance(program, str):
        return f"the program is a {type(program).__name__}, not a str"
    try:
        program.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"the program is not valid UTF-8 text ({e.reason} at character {e.start}: {program[e.start:e.end]!r})"
    return None


class Sandbox:
    """Runs untrusted Python programs, one process tree per program.

    Args:
        timeout (`float`, defaults to 3.0): wall-clock limit in seconds for one program (interpreter start-up
            included).
        memory_limit_mb (`int`, defaults to 1024): address-space limit (`RLIMIT_AS`) per process, in MiB; where a
            memory cgroup is available, also the limit of the whole process tree (memory it writes to tmpfs, memfd
            or shared memory included).
        max_processes (`int`, defaults to 32): processes the program may have alive at once (`RLIMIT_NPROC` of its
            own fresh uid when running as root; on top of the processes the user already runs otherwise).
        max_output_bytes (`int`, defaults to 8192): bytes of stdout / stderr kept in the result.
        max_file_size_mb (`int`, defaults to 64): largest file the program may write (`RLIMIT_FSIZE`), including its
            captured stdout / stderr; also the size of its private `/tmp`, `/dev/shm` and working directory.
        max_open_files (`int`, defaults to 64): open file descriptors per process (`RLIMIT_NOFILE`).
        use_namespaces (`bool`, defaults to `True`): use pid / network / IPC / mount namespaces when the host allows.
        use_seccomp (`bool`, defaults to `True`): install the seccomp filter when the host allows (x86-64 Linux).
        in_process_guard (`bool`, defaults to `True`): also install the in-interpreter audit hook (no sockets, no
            new programs, no signals, no writes outside the working directory, no `ctypes` / `_posixsubprocess`).
        uid (`int`, *optional*): uid to run programs as when root; by default a fresh uid per program.
        env (`dict[str, str]`, *optional*): extra environment variables for the program (its environment is otherwise
            minimal: `PATH`, `LANG`, `HOME` and `TMPDIR` set to its working directory, `PYTHONHASHSEED=0`,
            `OMP_NUM_THREADS=1`; nothing of the caller's environment).
        python (`str`, *optional*): interpreter for the programs; defaults to `sys.executable`.
    """

    def __init__(
        self,
        timeout: float = 3.0,
        memory_limit_mb: int = 1024,
        max_processes: int = 32,
        max_output_bytes: int = 8192,
        max_file_size_mb: int = 64,
        max_open_files: int = 64,
        use_namespaces: bool = True,
        use_seccomp: bool = True,
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
        self.max_open_files = _positive("max_open_files", max_open_files, int)
        if self.max_open_files < 16:
            raise ValueError(f"`max_open_files` must be at least 16 (the interpreter needs a few), got {max_open_files!r}.")
        if uid is not None and (isinstance(uid, bool) or not isinstance(uid, int) or uid <= 0):
            raise ValueError(f"`uid` must be a positive int (a non-root uid) or None, got {uid!r}.")
        self.use_namespaces = bool(use_namespaces)
        self.use_seccomp = bool(use_seccomp)
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
            "result_path": str(control / "result.jsonl"),
            "timeout": self.timeout,
            "memory_limit_bytes": self.memory_limit_mb * 2**20,
            "max_processes": self.max_processes,
            "max_file_size_bytes": self.max_file_size_mb * 2**20,
            "tmpfs_size_bytes": self.max_file_size_mb * 2**20,
            "max_open_files": self.max_open_files,
            "use_namespaces": self.use_namespaces,
            "use_seccomp": self.use_seccomp,
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
        holding only `program.py`; it passes when it runs to its end within the limits. A `str` that is not valid
        UTF-8 text (a lone surrogate) is not run and comes back `"failed"`.

        Raises:
            TypeError: `program` is not a `str`.
            SandboxError: the sandbox itself failed (not the program).
        """
        if not isinstance(program, str):
            raise TypeError(f"`program` must be Python source as a str, got {type(program).__name__}.")
        reason = unrunnable_reason(program)
        if reason is not None:
            return SandboxResult(status="failed", duration=0.0, stderr=f"{reason}: it was not run")
        control = Path(tempfile.mkdtemp(prefix="prism-sandbox-"))
        try:
            # others may traverse (not list) the control folder, to reach the working directory by its path
            os.chmod(control, 0o711)
            workdir = control / "work"
            workdir.mkdir(mode=0o700)
            (workdir / "program.py").write_bytes(program.encode("utf-8"))
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
        hung = False
        with open(control / "supervisor.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-B", str(_CHILD), "supervise", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                close_fds=True,
                env=_SUPERVISOR_ENV,  # nothing of the caller's environment (tokens, keys) reaches the sandbox
            )
            # a blocking wait returns at once when the supervisor exits (wait(timeout=) polls, up to 50 ms late)
            fired = threading.Event()

            def kill_hung_supervisor():
                fired.set()
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # its namespace init dies with it (parent-death signal)
                except ProcessLookupError:
                    pass

            backstop = threading.Timer(self.timeout + _BACKSTOP_S, kill_hung_supervisor)
            backstop.start()
            try:
                proc.wait()
            finally:
                backstop.cancel()
            hung = fired.is_set()
        events = _read_events(control / "result.jsonl")
        if hung:
            _remove_cgroup(events.get("cgroup"))
        stdout = _read_head(control / "stdout", self.max_output_bytes)
        stderr = _read_head(control / "stderr", self.max_output_bytes)
        log = _read_head(control / "supervisor.log", self.max_output_bytes)
        status, message = _status(events, hung)
        if status is None:
            # not the program's fault: scoring it as a failure would silently turn a broken setup into pass@k = 0
            details = "\n".join(part for part in (message, events.get("error", ""), stderr, log) if part)
            raise SandboxError(f"the sandbox could not run the program: {details}")
        if message:
            stderr += f"\n[{message}]"
        exit_event = events.get("exit", {})
        return SandboxResult(
            status=status,
            duration=float(exit_event.get("duration", time.monotonic() - start)),
            stdout=stdout,
            stderr=stderr,
            returncode=exit_event.get("code"),
            isolation=tuple(dict.fromkeys(events["isolation"])),
            notes=tuple(events["notes"]),
        )


def _read_events(path: Path) -> dict:
    """Fold the supervisor's report lines into one dict."""
    folded = {"isolation": [], "notes": [], "ready": False, "completed": False, "oom_kills": 0}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            event = json.loads(line)
            kind = event.pop("event")
        except (ValueError, KeyError, AttributeError):
            continue
        if kind == "setup":
            folded["isolation"] += event.get("isolation", [])
            folded["notes"] += event.get("notes", [])
        elif kind == "note":
            folded["notes"].append(event.get("message", ""))
        elif kind in ("ready", "completed"):
            folded[kind] = True
        elif kind == "oom":
            folded["oom_kills"] = int(event.get("kills", 0))
        elif kind == "cgroup":
            folded["cgroup"] = event.get("path")
        elif kind == "error":
            folded["error"] = event.get("message", "")
        elif kind in ("exit", "init_died"):
            folded[kind] = event
    return folded


def _status(events: dict, hung: bool) -> tuple[str | None, str]:
    """`(status, message)` from the folded events; status `None` when the sandbox itself failed."""
    if "error" in events:
        return None, ""
    if events["completed"]:
        return "passed", ""
    exit_event = events.get("exit")
    oom = events["oom_kills"] > 0
    if exit_event is None:  # the namespace init died, or the supervisor hung
        if oom and events["ready"]:
            return "memory", "killed by the memory cgroup (memory_limit_mb for the whole process tree)"
        if oom:
            return None, "the memory cgroup killed the sandbox before the program started: memory_limit_mb too small"
        if hung:
            return None, "the supervisor did not finish"
        return None, f"the sandbox's init process died ({events.get('init_died')})"
    outcome = exit_event.get("outcome")
    if not events["ready"]:
        if outcome == "timeout":
            return "timeout", "the interpreter did not start within the time limit"
        if oom:
            return None, "the memory cgroup killed the interpreter before the program started: memory_limit_mb too small"
        return None, f"the program interpreter ended before running the program ({exit_event})"
    if outcome == "timeout":
        return "timeout", ""
    if outcome == "exited":
        code = exit_event.get("code")
        if code == _MEMORY_EXIT_CODE:
            return "memory", ""
        if "record" in exit_event:
            return "failed", exit_event["record"]
        if code == 0:
            return "failed", "exited with status 0 before the end of the program: a program passes only by running to its end"
        return "failed", ""
    signum = exit_event.get("signal")
    if oom:
        return "memory", "killed by the memory cgroup (memory_limit_mb for the whole process tree)"
    if signum == signal.SIGXCPU:
        return "timeout", ""
    return "error", f"killed by signal {signum}"


def _remove_cgroup(path: str | None) -> None:
    if not path:
        return
    for _ in range(100):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)


def run_in_sandbox(program: str, **sandbox_kwargs) -> SandboxResult:
    """Execute one program with a :class:`Sandbox` built from `sandbox_kwargs` (see its arguments)."""
    return Sandbox(**sandbox_kwargs).run(program)


@functools.lru_cache(maxsize=None)
def host_isolation() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The isolation layers a default :class:`Sandbox` gets on this host, and the notes on those it cannot have.

    Runs one empty program (about 0.1 s) the first time; cached afterwards.

    Raises:
        NotImplementedError: not Linux.
        SandboxError: the sandbox cannot run programs on this host.
    """
    result = Sandbox(timeout=30.0).run("pass\n")
    return result.isolation, result.notes
