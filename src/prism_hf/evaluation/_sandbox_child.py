"""Process side of the sandbox: runs as its own interpreter, never imported by the parent process.

This file is executed twice per sandboxed program:

- ``supervise <config.json>``: the trusted supervisor, started by :class:`prism_hf.evaluation.sandbox.Sandbox` in a
  new session. It sets up every isolation layer the host allows (pid / network / mount namespaces, a fresh
  unprivileged uid when running as root, resource limits), starts the program, enforces the wall-clock limit and
  kills every process the program left behind before it writes its report.
- ``run <program.py> <workdir> <guard>``: the interpreter that executes the untrusted program, after the
  supervisor dropped privileges. With ``guard == "1"`` it first installs an in-process audit hook (second layer).

Only the standard library is used, so that the program interpreter does not depend on the parent's packages.
"""

import ctypes
import json
import math
import os
import resource
import signal
import stat
import sys
import time
import traceback


MEMORY_EXIT_CODE = 86  # exit status of the program interpreter when the program raised MemoryError
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
# Fresh uids for sandboxed programs when running as root: one per supervisor pid, far above any real account.
UID_BASE = 3_000_000_000
FALLBACK_UID = 65534  # nobody

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _unshare(flags):
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def _mount(source, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(
        _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
        f"mount {target}",
    )


def _prctl(option, value):
    _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(value), 0, 0, 0), "prctl")


def _world_accessible(path):
    """Whether a uid that is neither owner nor group member can traverse every directory down to ``path``."""
    path = os.path.abspath(path)
    parts = path.split(os.sep)
    for i in range(2, len(parts) + 1):
        prefix = os.sep.join(parts[:i]) or os.sep
        try:
            st = os.stat(prefix)
        except OSError:
            return False
        if stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IXOTH:
            return False
    return True


def _first_closed_ancestor(path):
    """The topmost directory on the way to ``path`` that others cannot traverse, and its child towards ``path``."""
    parts = os.path.abspath(path).split(os.sep)
    for i in range(2, len(parts)):
        prefix = os.sep.join(parts[:i])
        st = os.stat(prefix)
        if stat.S_ISDIR(st.st_mode) and not st.st_mode & stat.S_IXOTH:
            return prefix, parts[i]
    return None


def _open_path_to(paths):
    """Mount-namespace-only: make ``paths`` reachable for other uids without exposing their closed ancestors.

    A closed ancestor (say ``/root``, mode 0700) is covered with an empty tmpfs, and only its child on the way to
    the needed path is bound back, read-only. Nothing changes outside the namespace.
    """
    for path in paths:
        for _ in range(8):
            found = _first_closed_ancestor(path)
            if found is None:
                break
            closed, child = found
            fd = os.open(os.path.join(closed, child), os.O_PATH)
            try:
                _mount("tmpfs", closed, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
                os.mkdir(os.path.join(closed, child))
                target = os.path.join(closed, child)
                _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
                _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
            finally:
                os.close(fd)


def _mask_temp_dirs(cfg, owner):
    """Mount-namespace-only: give the program fresh, empty ``/tmp``, ``/var/tmp`` and ``/dev/shm``, and a working
    directory of its own on a size-limited tmpfs (at the same path), so that world-writable host directories are
    out of reach and what it writes is bounded in size and vanishes with the namespace."""
    workdir = cfg["workdir"]
    size = cfg["tmpfs_size_bytes"]
    keep = [os.path.realpath(p) for p in cfg["needed_paths"]]
    with open(os.path.join(workdir, "program.py"), "rb") as f:
        program = f.read()
    masked = []
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        if not os.path.isdir(d) or os.path.islink(d):
            continue
        real = os.path.realpath(d)
        if any(p == real for p in keep):
            continue  # the directory itself is needed (an interpreter installed as /tmp): cannot hide it
        # Paths the program needs below it (say a virtual environment in /tmp/x/.venv) are bound back read-only
        # over the fresh tmpfs: the rest of the host directory is hidden and nothing in it can be written.
        children = sorted({p[len(real) + 1 :].split(os.sep)[0] for p in keep if p.startswith(real + os.sep)})
        fds = {child: os.open(os.path.join(real, child), os.O_PATH) for child in children}
        try:
            _mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size={size}")
            for child, fd in fds.items():
                target = os.path.join(d, child)
                if os.path.isdir(f"/proc/self/fd/{fd}"):
                    os.mkdir(target, 0o755)
                else:
                    open(target, "w").close()
                _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
                _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
        finally:
            for fd in fds.values():
                os.close(fd)
        masked.append(d)
    os.makedirs(workdir, exist_ok=True)
    uid, gid = owner
    _mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=0700,size={size},uid={uid},gid={gid}")
    fd = os.open(os.path.join(workdir, "program.py"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(program)
    return masked


def _count_processes_of(uid):
    count = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    count += 1
            except OSError:
                pass
    return count


def _children_of(pid):
    kids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        # the command name may contain spaces and parentheses: the ppid is the 2nd field after the last ')'
        fields = data[data.rindex(b")") + 2 :].split()
        if int(fields[1]) == pid:
            kids.append(int(name))
    return kids


def _reap_all():
    """Collect every exited child; returns ``{pid: wait status}``."""
    done = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return done
        if pid == 0:
            return done
        done[pid] = status


def _kill_descendants():
    """As a child subreaper, kill every process below this one until none is left (orphans reparent to us)."""
    me = os.getpid()
    for _ in range(10_000):
        kids = _children_of(me)
        _reap_all()
        if not kids:
            return
        for kid in kids:
            try:
                os.kill(kid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.001)
        _reap_all()


def _start_program(cfg, drop_to, stdout_fd, stderr_fd):
    """Fork and exec the program interpreter with limits applied.

    Returns ``(pid, setup_error)``: ``setup_error`` is the traceback of a failure before the program could start
    (reported through a close-on-exec pipe, so a successful exec reports nothing), else ``None``.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        chunks = []
        while True:
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(read_fd)
        return pid, (b"".join(chunks).decode(errors="replace") or None)
    os.close(read_fd)
    try:
        os.setsid()
        mem = cfg["memory_limit_bytes"]
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        fsize = cfg["max_file_size_bytes"]
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        cpu = math.ceil(cfg["timeout"]) + 1  # backstop only: the wall clock is enforced by the supervisor
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        if drop_to is not None:
            uid, gid = drop_to
            nproc = cfg["max_processes"]
        else:
            uid = None
            # RLIMIT_NPROC counts every process of the real uid: leave room for what already runs
            nproc = _count_processes_of(os.getuid()) + cfg["max_processes"]
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        if uid is not None:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        # set after the uid change (which clears it): if the supervisor is killed, the program goes with it
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        os.chdir(cfg["workdir"])
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(stdout_fd, 1)
        os.dup2(stderr_fd, 2)
        argv = [cfg["python"], "-I", "-B", "-c", cfg["runner_source"], "run", "program.py", cfg["workdir"]]
        argv.append("1" if cfg["in_process_guard"] else "0")
        argv.append(json.dumps(cfg["extra_sys_path"]))
        os.execve(cfg["python"], argv, cfg["env"])
    except BaseException:
        try:
            os.write(write_fd, traceback.format_exc().encode())
        finally:
            os._exit(127)


def _supervise_program(cfg, drop_to, stdout_fd, stderr_fd, in_pid_namespace):
    """Run the program under the wall-clock limit; kill everything it started; returns the report dict."""
    if not in_pid_namespace:
        try:
            _prctl(PR_SET_CHILD_SUBREAPER, 1)
        except OSError:
            pass
    start = time.monotonic()
    deadline = start + cfg["timeout"]
    pid, setup_error = _start_program(cfg, drop_to, stdout_fd, stderr_fd)
    if setup_error is not None:
        os.waitpid(pid, 0)
        return {"outcome": "error", "message": f"could not start the program:\n{setup_error}", "duration": 0.0}
    status = None
    while status is None:
        done = _reap_all()
        if pid in done:
            status = done[pid]
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(0.002)
    duration = time.monotonic() - start
    if status is None:
        report = {"outcome": "timeout"}
    elif os.WIFEXITED(status):
        report = {"outcome": "exited", "code": os.WEXITSTATUS(status)}
    else:
        report = {"outcome": "signaled", "signal": os.WTERMSIG(status)}
    report["duration"] = duration
    if not in_pid_namespace:
        _kill_descendants()  # in a pid namespace the kernel does it when its init exits
    return report


def supervise(config_path):
    with open(config_path) as f:
        cfg = json.load(f)
    result_fd = os.open(cfg["result_path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    stdout_fd = os.open(cfg["stdout_path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    stderr_fd = os.open(cfg["stderr_path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    layers = ["rlimits", "own_session"]
    notes = []
    is_root = os.geteuid() == 0
    namespaces = 0
    if cfg["use_namespaces"]:
        wanted = CLONE_NEWPID | CLONE_NEWNET
        if not is_root:
            wanted |= CLONE_NEWUSER
        uid, gid = os.getuid(), os.getgid()
        try:
            _unshare(wanted)
            namespaces = wanted
        except OSError as e:
            notes.append(f"pid/network namespaces unavailable ({e})")
        if namespaces & CLONE_NEWUSER:
            with open("/proc/self/setgroups", "w") as f:
                f.write("deny")
            with open("/proc/self/uid_map", "w") as f:
                f.write(f"0 {uid} 1")
            with open("/proc/self/gid_map", "w") as f:
                f.write(f"0 {gid} 1")
            layers.append("user_namespace")
    if namespaces:
        layers += ["pid_namespace", "network_namespace"]
    in_pid_namespace = bool(namespaces & CLONE_NEWPID)
    # a fresh uid per supervisor (pids are unique while it lives), so parallel sandboxes never share a process budget
    run_uid = cfg["uid"] if cfg["uid"] is not None else UID_BASE + os.getpid()

    def run_as_init(write_fd):
        """Body of the (namespace) init process, or of the supervisor itself without namespaces."""
        mount_ns = False
        if cfg["use_namespaces"] and (is_root or namespaces & CLONE_NEWUSER):
            try:
                _unshare(CLONE_NEWNS)
                _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount may leak to the host
                mount_ns = True
            except OSError as e:
                notes.append(f"mount namespace unavailable ({e})")
        if mount_ns and in_pid_namespace:
            try:
                _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
                layers.append("private_proc")
            except OSError as e:
                notes.append(f"could not mount a private /proc ({e})")
        drop_to = None
        if is_root and not namespaces & CLONE_NEWUSER:
            reachable = all(_world_accessible(p) for p in cfg["needed_paths"])
            if not reachable and mount_ns:
                try:
                    _open_path_to(cfg["needed_paths"])
                    reachable = all(_world_accessible(p) for p in cfg["needed_paths"])
                except OSError as e:
                    notes.append(f"could not expose the interpreter to an unprivileged uid ({e})")
            if reachable:
                drop_to = (run_uid, run_uid)
                os.chown(cfg["workdir"], run_uid, run_uid)
                layers.append("unprivileged_uid")
            else:
                notes.append("interpreter not readable by an unprivileged uid: program runs as root")
        if mount_ns:
            try:
                masked = _mask_temp_dirs(cfg, drop_to or (os.getuid(), os.getgid()))
                layers.append("private_workdir")
                if masked:
                    layers.append("private_tmp")
            except OSError as e:
                notes.append(f"could not mount private temporary directories ({e})")
        if cfg["in_process_guard"]:
            layers.append("audit_hook")
        report = _supervise_program(cfg, drop_to, stdout_fd, stderr_fd, in_pid_namespace)
        report["isolation"] = layers
        report["notes"] = notes
        report["uid"] = drop_to[0] if drop_to else os.getuid()
        os.write(write_fd, json.dumps(report).encode())

    if not in_pid_namespace:
        run_as_init(result_fd)
        return
    # the first child in a new pid namespace is its init: when it exits, the kernel kills all that is left
    read_fd, write_fd = os.pipe()
    init = os.fork()
    if init == 0:
        os.close(read_fd)
        try:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the supervisor killed => the whole namespace goes
            run_as_init(write_fd)
            os._exit(0)
        except BaseException:
            os.write(write_fd, json.dumps({"outcome": "error", "message": traceback.format_exc()}).encode())
            os._exit(1)
    os.close(write_fd)
    chunks = []
    backstop = time.monotonic() + cfg["timeout"] + 10.0
    os.set_blocking(read_fd, False)
    while True:
        try:
            chunk = os.read(read_fd, 65536)
        except BlockingIOError:
            chunk = None
        if chunk == b"":
            break
        if chunk:
            chunks.append(chunk)
        if time.monotonic() > backstop:
            os.kill(init, signal.SIGKILL)
            break
        time.sleep(0.002)
    os.waitpid(init, 0)  # returns once every process of the namespace is gone
    data = b"".join(chunks) or json.dumps({"outcome": "error", "message": "namespace init died"}).encode()
    os.write(result_fd, data)


# ----------------------------------------------------------------------------------------------------------------
# program side (runs as the unprivileged uid)


def _install_guard(workdir):
    """Second layer: an audit hook that refuses network access, new programs, signals to other processes and writes
    outside ``workdir``. It cannot be removed from Python code; native code (not reachable: ctypes is refused) could
    bypass it."""
    import socket

    workdir = os.path.realpath(workdir)
    allowed = (workdir, os.devnull)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    refused = {
        "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr", "socket.connect", "socket.bind",
        "socket.sendto", "socket.sendmsg", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "subprocess.Popen",
        "os.kill", "os.killpg", "signal.pthread_kill", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata",
        "os.chroot", "pty.spawn",
    }
    path_events = {
        "os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.chmod": (0,), "os.chown": (0,),
        "os.rename": (0, 1), "os.link": (0, 1), "os.symlink": (1,), "os.truncate": (0,), "os.utime": (0,),
        "shutil.rmtree": (0,), "os.chflags": (0,), "os.mkfifo": (0,), "os.mknod": (0,), "os.removexattr": (0,),
        "os.setxattr": (0,),
    }

    def inside(path):
        if isinstance(path, int):
            return True  # an already open descriptor: the open was checked
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        real = os.path.realpath(os.fspath(path))
        return any(real == a or real.startswith(a + os.sep) for a in allowed)

    def hook(event, args):
        if event in refused:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "socket.__new__" and args[1] not in (getattr(socket, "AF_UNIX", -1),):
            raise PermissionError("sandbox: network sockets are not allowed")
        if event == "open":
            path, mode, flags = args
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & write_flags
            if writes and path is not None and not inside(path):
                raise PermissionError(f"sandbox: writing outside the working directory is not allowed: {path!r}")
        elif event in path_events:
            for i in path_events[event]:
                if i < len(args) and args[i] is not None and not inside(args[i]):
                    raise PermissionError(f"sandbox: {event} outside the working directory is not allowed")

    sys.addaudithook(hook)


def run(program_path, workdir, guard, extra_sys_path):
    sys.path.extend(p for p in json.loads(extra_sys_path) if os.path.isdir(p))
    with open(program_path, encoding="utf-8") as f:
        source = f.read()
    if guard == "1":
        _install_guard(workdir)
    namespace = {"__name__": "__main__", "__file__": os.path.abspath(program_path), "__builtins__": __builtins__}
    try:
        code = compile(source, "program.py", "exec")
        exec(code, namespace)
    except MemoryError:
        os.write(2, b"MemoryError\n")
        os._exit(MEMORY_EXIT_CODE)
    except SystemExit:
        raise
    except BaseException:
        try:
            traceback.print_exc()
        except MemoryError:
            os._exit(MEMORY_EXIT_CODE)
        sys.exit(1)


if __name__ == "__main__":
    if sys.argv[1] == "supervise":
        supervise(sys.argv[2])
    elif sys.argv[1] == "run":
        run(*sys.argv[2:6])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}")
