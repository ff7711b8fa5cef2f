"""The sandbox contains hostile programs and scores them as failures.

Every hostile program here is bounded (a capped number of forks, a capped amount of memory, short sleeps), so that a
broken sandbox makes a test fail without hurting the machine.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from prism_hf.evaluation import Sandbox, SandboxError, SandboxResult, run_in_sandbox


IS_ROOT = os.geteuid() == 0
# Every sandbox of this module tags its programs' environment, so that leftovers are found by the tag (even after
# setsid / double fork) and sandboxes run by other processes at the same time are not counted.
TOKEN = f"prism-sandbox-test-{uuid.uuid4().hex}"
TAG = {"PRISM_SANDBOX_TEST_TOKEN": TOKEN}


def _tagged_processes():
    """Pids of live (non-zombie) processes whose environment carries this module's tag."""
    needle = f"PRISM_SANDBOX_TEST_TOKEN={TOKEN}".encode()
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read()
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state != b"Z" and needle in environ:
            pids.append(int(name))
    return pids


def _describe(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return {k: fields[k].strip() for k in ("State", "PPid", "Uid", "NSpid") if k in fields}
    except OSError:
        return "gone"


def _assert_nothing_left():
    # the sandbox promises that nothing runs once run() returns: no waiting here
    left = _tagged_processes()
    assert left == [], {pid: _describe(pid) for pid in left[:4]}


def _sandbox(**kwargs):
    return Sandbox(env=TAG, **kwargs)


def test_passing_and_failing_programs():
    sandbox = _sandbox(timeout=5)
    ok = sandbox.run("def add(a, b):\n    return a + b\nassert add(2, 3) == 5\nprint('fine')\n")
    assert isinstance(ok, SandboxResult)
    assert ok.status == "passed" and ok.passed and ok.returncode == 0
    assert ok.stdout == "fine\n"
    bad = sandbox.run("def add(a, b):\n    return a - b\nassert add(2, 3) == 5\n")
    assert bad.status == "failed" and not bad.passed
    assert "AssertionError" in bad.stderr
    syntax = sandbox.run("def add(a, b:\n")
    assert syntax.status == "failed" and "SyntaxError" in syntax.stderr
    env = sandbox.run("import os\nassert os.environ['PRISM_SANDBOX_TEST_TOKEN'] == " + repr(TOKEN))
    assert env.status == "passed", env.stderr


def test_infinite_loop_times_out():
    start = time.monotonic()
    result = run_in_sandbox("while True:\n    pass\n", timeout=1.0, env=TAG)
    elapsed = time.monotonic() - start
    assert result.status == "timeout" and not result.passed
    assert 1.0 <= result.duration < 1.5
    assert elapsed < 4.0
    _assert_nothing_left()


FORK_BOMB = textwrap.dedent(
    """
    import os, time
    root = os.getpid()
    made = refused = 0
    for _ in range({depth}):  # every process forks again: at most 2**{depth} processes if nothing contains it
        try:
            if os.fork() == 0:
                made = refused = 0
            else:
                made += 1
        except OSError:
            refused += 1
        time.sleep(0.05)  # let the children fork too, so that the cap is reached while the root still forks
    if os.getpid() == root:
        print(f"made={{made}} refused={{refused}}", flush=True)
    time.sleep(20)
    """
)


@pytest.mark.parametrize("use_namespaces", [True, False], ids=["namespaces", "rlimits_only"])
def test_fork_bomb_is_contained(use_namespaces):
    # as root without namespaces, the fresh uid needs an interpreter that others may run (the venv's may be closed)
    python = _interpreter_for_others() if IS_ROOT and not use_namespaces else None
    sandbox = _sandbox(timeout=5.0, max_processes=16, use_namespaces=use_namespaces, python=python)
    result = sandbox.run(FORK_BOMB.format(depth=12 if use_namespaces else 9))
    assert result.status == "timeout" and not result.passed
    if use_namespaces:
        assert "pid_namespace" in result.isolation, result.notes
    if IS_ROOT and (use_namespaces or python is not None):
        assert "unprivileged_uid" in result.isolation, result.notes
    if not IS_ROOT or "unprivileged_uid" in result.isolation:
        # RLIMIT_NPROC holds: the root process saw forks refused (root itself is exempt from it)
        made, refused = (int(part.split("=")[1]) for part in result.stdout.split())
        assert refused > 0 and made <= 16
    _assert_nothing_left()


@pytest.mark.parametrize("use_namespaces", [True, False], ids=["namespaces", "rlimits_only"])
def test_daemonized_processes_are_killed(use_namespaces):
    program = textwrap.dedent(
        """
        import os, time
        if os.fork() == 0:
            os.setsid()              # leave the process group
            if os.fork() == 0:       # and the parent: a classic daemon
                time.sleep(20)
            os._exit(0)
        time.sleep(0.2)
        print("parent done", flush=True)
        """
    )
    result = _sandbox(timeout=5.0, use_namespaces=use_namespaces).run(program)
    assert result.status == "passed", result.stderr
    _assert_nothing_left()


def test_memory_bomb_is_contained():
    program = textwrap.dedent(
        """
        chunks = []
        for _ in range(32):  # at most 2 GiB if nothing contains it
            chunks.append(b"x" * (64 * 2**20))
        """
    )
    result = run_in_sandbox(program, timeout=10.0, memory_limit_mb=256, env=TAG)
    assert result.status == "memory" and not result.passed
    assert result.duration < 5.0
    _assert_nothing_left()


def _guard_variants():
    variants = [pytest.param(True, id="guard_on")]
    # without the in-process guard only the OS layers are left: they exist as root (or with user namespaces)
    variants.append(pytest.param(False, id="guard_off", marks=pytest.mark.skipif(not IS_ROOT, reason="needs root")))
    return variants


@pytest.mark.parametrize("in_process_guard", _guard_variants())
def test_files_outside_the_working_directory_are_untouched(tmp_path, in_process_guard):
    guarded = tmp_path / "guarded"
    guarded.mkdir()
    sentinel = guarded / "sentinel.txt"
    sentinel.write_text("keep me")
    # an unprivileged uid could read these but neither modify nor delete them
    os.chmod(sentinel, 0o644)
    os.chmod(guarded, 0o755)
    os.chmod(tmp_path, 0o755)
    host_tmp_file = f"/tmp/prism-sandbox-escape-{os.getpid()}-{int(in_process_guard)}"
    program = textwrap.dedent(
        f"""
        import os, shutil
        errors = []
        actions = [
            lambda: os.remove({str(sentinel)!r}),
            lambda: open({str(sentinel)!r}, "w").write("overwritten"),
            lambda: shutil.rmtree({str(guarded)!r}),
            lambda: open({str(guarded / "new.txt")!r}, "w").write("new"),
            lambda: open({host_tmp_file!r}, "w").write("escaped"),
        ]
        for action in actions:
            try:
                action()
            except Exception as e:
                errors.append(type(e).__name__)
        with open("inside.txt", "w") as f:  # its own directory is writable
            f.write("ok")
        assert open("inside.txt").read() == "ok"
        print(os.getcwd())
        assert not errors, errors
        """
    )
    result = _sandbox(timeout=5.0, in_process_guard=in_process_guard).run(program)
    assert result.status == "failed", (result.status, result.stderr)
    assert "assert not errors" in result.stderr  # writing inside its own directory worked
    if not in_process_guard:
        assert "unprivileged_uid" in result.isolation, result.notes
    assert sentinel.read_text() == "keep me"
    assert sorted(p.name for p in guarded.iterdir()) == ["sentinel.txt"]
    assert not os.path.exists(host_tmp_file)
    workdir = result.stdout.strip()
    assert workdir and not os.path.exists(workdir)  # the working directory is removed afterwards


@pytest.mark.parametrize("in_process_guard", _guard_variants())
def test_socket_to_localhost_is_refused(in_process_guard):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    arrived = []

    def accept():
        deadline = time.monotonic() + 6.0
        while time.monotonic() < deadline and not stop.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            arrived.append(conn.recv(64))
            conn.close()

    stop = threading.Event()
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    program = textwrap.dedent(
        f"""
        import socket
        s = socket.create_connection(("127.0.0.1", {port}), timeout=2)
        s.sendall(b"escaped")
        s.close()
        """
    )
    try:
        result = _sandbox(timeout=5.0, in_process_guard=in_process_guard).run(program)
        time.sleep(0.3)  # a connection that did get through would have been accepted by now
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert result.status == "failed", (result.status, result.stderr)
    assert arrived == []
    if not in_process_guard:
        assert "network_namespace" in result.isolation, result.notes


def test_writes_are_bounded():
    program = textwrap.dedent(
        """
        written = 0
        try:
            with open("big.bin", "wb") as f:  # one file beyond the limit
                f.write(b"x" * (8 * 2**20))
        except OSError as e:
            print("big refused", flush=True)
        try:
            for i in range(16):  # many files within the limit: at most 16 MiB if nothing bounds the total
                with open(f"part{i}.bin", "wb") as f:
                    f.write(b"x" * 2**20)
                written += 1
        finally:
            print(f"written={written}", flush=True)
        """
    )
    result = _sandbox(timeout=5.0, max_file_size_mb=4).run(program)
    assert "big refused" in result.stdout
    if "private_workdir" in result.isolation:  # the working directory is a tmpfs of max_file_size_mb
        assert result.status == "failed" and "No space left" in result.stderr
        assert int(result.stdout.split("written=")[1]) < 4
    _assert_nothing_left()


def test_output_is_truncated():
    result = run_in_sandbox("print('x' * 100_000)", timeout=5.0, max_output_bytes=100)
    assert result.status == "passed"
    assert result.stdout.startswith("x" * 100) and result.stdout.endswith("[... truncated]")
    assert len(result.stdout) < 200


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1.5}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"memory_limit_mb": 0}, "memory_limit_mb"),
        ({"memory_limit_mb": -256}, "memory_limit_mb"),
        ({"max_processes": 0}, "max_processes"),
        ({"max_output_bytes": -1}, "max_output_bytes"),
    ],
)
def test_non_positive_limits_are_rejected(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}` must be a positive"):
        Sandbox(**kwargs)


@pytest.mark.parametrize("env", [{"A": 1}, {"": "x"}, ["A=1"]])
def test_bad_env_is_rejected(env):
    with pytest.raises(ValueError, match="`env` must map variable names to str values"):
        Sandbox(env=env)


@pytest.mark.skipif(not IS_ROOT, reason="needs an interpreter that root may run and the fresh uid may not")
def test_a_sandbox_that_cannot_start_the_program_raises(tmp_path):
    private_copy = tmp_path / "python-private"
    private_copy.write_bytes(b"#!/bin/sh\nexit 0\n")
    os.chmod(private_copy, 0o700)  # root may execute it, nobody else
    with pytest.raises(SandboxError, match="could not start the program"):
        _sandbox(timeout=5.0, python=str(private_copy)).run("print('never')")


def test_program_must_be_a_string():
    with pytest.raises(TypeError, match="`program` must be Python source"):
        Sandbox().run(b"print(1)")


def _interpreter_for_others():
    """A Python interpreter that an unprivileged uid can run (the venv's may sit under a closed home directory)."""
    from prism_hf.evaluation._sandbox_child import _world_accessible

    for candidate in (sys.executable, os.path.realpath(sys.executable), "/usr/bin/python3"):
        if os.path.exists(candidate) and _world_accessible(os.path.realpath(candidate)):
            return candidate
    return None


UNPRIVILEGED_CALLER = textwrap.dedent(
    """
    import importlib.util, json, socket, sys
    spec = importlib.util.spec_from_file_location("sandbox", sys.argv[1])
    sandbox = importlib.util.module_from_spec(spec)
    sys.modules["sandbox"] = sandbox
    spec.loader.exec_module(sandbox)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.3)
    out = {}
    for use_namespaces in (True, False):
        box = sandbox.Sandbox(
            timeout=5.0, memory_limit_mb=256, max_processes=16, use_namespaces=use_namespaces,
            env={"PRISM_SANDBOX_TEST_TOKEN": sys.argv[4]},
        )
        fork = box.run(sys.argv[2])
        sock = box.run(f"import socket\\nsocket.create_connection(('127.0.0.1', {listener.getsockname()[1]}), 1)")
        try:
            listener.accept()[0].close()
            arrived = True
        except socket.timeout:
            arrived = False
        memory = box.run("x = b'x' * 2**30")
        write = box.run(f"open({sys.argv[3]!r}, 'w').write('escaped')")
        out[str(use_namespaces)] = {
            "fork": [fork.status, fork.stdout], "socket": [sock.status, arrived], "memory": memory.status,
            "write": write.status, "isolation": list(fork.isolation),
        }
    print(json.dumps(out))
    """
)


@pytest.mark.skipif(not IS_ROOT, reason="switches to an unprivileged uid to test the non-root path")
def test_unprivileged_caller_falls_back_to_rlimits_and_guard(tmp_path, request):
    python = _interpreter_for_others()
    if python is None:
        pytest.skip("no Python interpreter readable by an unprivileged uid on this host")
    import prism_hf.evaluation.sandbox as sandbox_module

    os.chmod(tmp_path, 0o777)
    # The unprivileged caller imports the sandbox from copies it can read (the checkout may sit in a closed folder).
    code_dir = Path(tempfile.mkdtemp(prefix="prism-sandbox-code-"))  # directly under /tmp: reachable by any uid
    os.chmod(code_dir, 0o755)
    request.addfinalizer(lambda: shutil.rmtree(code_dir, ignore_errors=True))
    for source in (Path(sandbox_module.__file__), Path(sandbox_module.__file__).with_name("_sandbox_child.py")):
        shutil.copyfile(source, code_dir / source.name)
        os.chmod(code_dir / source.name, 0o644)
    target = tmp_path / "escaped.txt"
    proc = subprocess.run(
        [python, "-c", UNPRIVILEGED_CALLER, str(code_dir / "sandbox.py"), FORK_BOMB.format(depth=9), str(target), TOKEN],
        user=65534, group=65534, extra_groups=[], cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for use_namespaces, row in out.items():
        assert row["fork"][0] == "timeout"
        made, refused = (int(part.split("=")[1]) for part in row["fork"][1].split())
        assert refused > 0, row  # RLIMIT_NPROC holds for a non-root uid
        assert row["socket"] == ["failed", False], row
        assert row["memory"] == "memory" and row["write"] == "failed", row
    assert "audit_hook" in out["False"]["isolation"] and "pid_namespace" not in out["False"]["isolation"]
    assert not target.exists()
    _assert_nothing_left()
