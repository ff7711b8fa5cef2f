"""Process side of the sandbox: runs as its own interpreter, never imported by the parent process.

This file is executed twice per sandboxed program:

- ``supervise <config.json>``: the trusted supervisor, started by :class:`prism_hf.evaluation.sandbox.Sandbox` in a
  new session with a minimal environment. It sets up every isolation layer the host allows (a memory cgroup; pid,
  network, IPC and mount namespaces; a read-only view of the file system; a fresh unprivileged uid when running as
  root; no capabilities, ``no_new_privs`` and a seccomp filter; resource limits), starts the program, enforces the
  wall-clock limit and kills every process the program left behind. It reports to the parent as JSON lines (events)
  in the result file.
- ``run <workdir> <guard> <extra_sys_path>``: the interpreter that executes the untrusted program, after the
  supervisor dropped privileges. With ``guard == "1"`` it first installs an in-process audit hook (second layer).
  This interpreter never loads ``ctypes``: an extension module once loaded stays reachable from Python code (through
  ``gc``) whatever is deleted afterwards, so the only safe ``ctypes`` is one that was never imported.

Completion record: the program passes only if the runner reports, after ``exec`` of the whole program returned
normally, a 128-bit nonce that the supervisor put into a pipe before the program started. The program's own exit path
(exit status, ``SystemExit``, ``os._exit``, ``atexit``, signals, patched ``sys.exit`` / ``traceback`` / builtins)
cannot produce it. What a program written against this runner can still do is documented in ``docs/code_eval.md``.

Only the standard library is used, so that the program interpreter does not depend on the parent's packages.
"""

import json
import math
import os
import re
import resource
import signal
import stat
import struct
import sys
import time
import traceback


MEMORY_EXIT_CODE = 86  # exit status of the program interpreter when the program raised MemoryError
NONCE_FD = 3  # in the program: read end of the pipe holding the nonce (read by the runner after exec returned)
RECORD_FD = 4  # in the program: write end of the record pipe (READY before the program, DONE + nonce after it)
READY = b"R"
DONE = b"D"
NONCE_HEX_CHARS = 32

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
# NOROOT (+ locked): uid 0 gains no capabilities on execve; the set-uid fix-up (caps cleared when leaving uid 0),
# keep-caps off and no ambient raise are locked as they are.
SECUREBITS = (1 << 0) | (1 << 1) | (1 << 3) | (1 << 5) | (1 << 6) | (1 << 7)
LINUX_CAPABILITY_VERSION_3 = 0x20080522
# Fresh uids for sandboxed programs when running as root: one per supervisor pid, far above any real account.
UID_BASE = 3_000_000_000

_libc_handle = None


def _libc():
    """libc through ctypes, for the supervisor only (the program interpreter must never import ctypes)."""
    global _libc_handle
    if _libc_handle is None:
        import ctypes

        _libc_handle = ctypes.CDLL(None, use_errno=True)
    return _libc_handle


def _check(ret, what):
    if ret != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _unshare(flags):
    import ctypes

    _check(_libc().unshare(ctypes.c_int(flags)), "unshare")


def _mount(source, target, fstype, flags, data=None):
    import ctypes

    enc = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
    _check(
        _libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
        f"mount {target}",
    )


def _prctl(option, *args):
    import ctypes

    values = [ctypes.c_ulong(a) if isinstance(a, int) else a for a in (*args, 0, 0, 0, 0)[:4]]
    _check(_libc().prctl(ctypes.c_int(option), *values), f"prctl({option})")


def _emit(fd, event, **fields):
    """One report line for the parent (small: a single write is atomic on the O_APPEND result file)."""
    os.write(fd, (json.dumps({"event": event, **fields}) + "\n").encode())


# ----------------------------------------------------------------------------------------------------------------
# file system views (mount namespace only)


def _unescape(field):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mountinfo():
    """Rows of ``/proc/self/mountinfo``: mount point, per-mount options, file system type, super options, root."""
    rows = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            rows.append(
                {
                    "root": _unescape(fields[3]),
                    "mount_point": _unescape(fields[4]),
                    "options": fields[5].split(","),
                    "fstype": fields[sep + 1],
                    "super_options": fields[sep + 3].split(",") if len(fields) > sep + 3 else [],
                }
            )
    return rows


def _statvfs_mount_flags(path):
    """The flags a bind remount must repeat (in a user namespace they are locked: leaving one out is refused)."""
    f_flag = os.statvfs(path).f_flag
    flags = 0
    for st, ms in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC)):
        if f_flag & st:
            flags |= ms
    if f_flag & os.ST_NOATIME:
        flags |= MS_NOATIME
    elif f_flag & os.ST_RELATIME:
        flags |= MS_RELATIME
    else:
        flags |= MS_STRICTATIME
    if f_flag & os.ST_NODIRATIME:
        flags |= MS_NODIRATIME
    return flags


def _make_mounts_read_only():
    """Remount every mount of this (private) mount namespace read-only, as bind remounts: only this namespace's view
    changes, never the file systems themselves. Returns ``None`` when every mount the namespace can reach is
    read-only afterwards, else the reason."""
    failures = []
    seen = set()
    for row in _mountinfo():
        point = row["mount_point"]
        if point in seen:
            continue  # stacked mounts: a remount of the path reaches the top one, the ones below are hidden
        seen.add(point)
        try:
            flags = _statvfs_mount_flags(point)
        except OSError:
            continue  # not reachable from here (e.g. below a closed directory), hence not from the program either
        try:
            _mount(None, point, None, MS_BIND | MS_REMOUNT | MS_RDONLY | flags)
        except OSError as e:
            failures.append(f"{point} ({e.strerror})")
    top = {row["mount_point"]: row for row in _mountinfo()}  # later rows are mounted on top of earlier ones
    writable = []
    for point, row in top.items():
        if "ro" not in row["options"]:
            try:
                os.statvfs(point)
            except OSError:
                continue
            writable.append(point)
    if writable:
        return f"mounts left writable: {', '.join(writable[:8])}" + (f"; errors: {'; '.join(failures[:4])}" if failures else "")
    return None


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
        try:
            st = os.stat(prefix)
        except OSError:
            return None
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
                _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | _statvfs_mount_flags(target))
            finally:
                os.close(fd)


def _mask_temp_dirs(cfg, owner, program):
    """Mount-namespace-only, after the read-only pass: fresh, empty, size-limited ``/tmp``, ``/var/tmp`` and
    ``/dev/shm`` (the only writable places besides the working directory) and a working directory of its own on a
    size-limited tmpfs at the same path holding ``program.py``. What the program writes is bounded and vanishes with
    the namespace."""
    workdir = cfg["workdir"]
    size = cfg["tmpfs_size_bytes"]
    keep = [os.path.realpath(p) for p in cfg["needed_paths"]]
    masked = []
    for d in ("/tmp", "/var/tmp", "/dev/shm"):
        if not os.path.isdir(d) or os.path.islink(d):
            continue
        real = os.path.realpath(d)
        if any(p == real for p in keep):
            continue  # the directory itself is needed (an interpreter installed as /tmp): it stays read-only
        # Paths the program needs below it (say a virtual environment in /tmp/x/.venv) are bound back read-only
        # over the fresh tmpfs: the rest of the host directory is hidden.
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
                _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | _statvfs_mount_flags(target))
        finally:
            for fd in fds.values():
                os.close(fd)
        masked.append(d)
    if not os.path.isdir(workdir):
        os.makedirs(workdir)  # inside a fresh tmpfs above (the host's directory is hidden there)
    uid, gid = owner
    _mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=0700,size={size},uid={uid},gid={gid}")
    fd = os.open(os.path.join(workdir, "program.py"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(program)
    os.chown(os.path.join(workdir, "program.py"), uid, gid)
    return masked


# ----------------------------------------------------------------------------------------------------------------
# memory cgroup (v1 or v2): one cgroup for the program's whole process tree


class MemoryCgroup:
    """A memory cgroup of its own, created below the supervisor's current one and removed afterwards."""

    def __init__(self, path, base, version):
        self.path, self.base, self.version = path, base, version

    @staticmethod
    def locate(proc_cgroup="/proc/self/cgroup", mounts=None):
        """``(version, directory)`` of this process's memory cgroup; raises ``OSError`` saying why there is none.

        ``proc_cgroup`` and ``mounts`` (rows of :func:`_mountinfo`) default to this process's own.
        """
        with open(proc_cgroup) as f:
            lines = [line.rstrip("\n").split(":", 2) for line in f if line.count(":") >= 2]
        mounts = _mountinfo() if mounts is None else mounts
        for _, controllers, rel in lines:
            if "memory" in controllers.split(","):
                for row in mounts:
                    if row["fstype"] == "cgroup" and "memory" in row["super_options"]:
                        inner = rel[len(row["root"]) :] if rel.startswith(row["root"]) else rel
                        return 1, os.path.join(row["mount_point"], inner.lstrip("/"))
                raise OSError(f"the cgroup v1 memory hierarchy ({rel}) is not mounted here")
        for hierarchy, _, rel in lines:
            if hierarchy == "0":
                for row in mounts:
                    if row["fstype"] == "cgroup2":
                        inner = rel[len(row["root"]) :] if rel.startswith(row["root"]) else rel
                        base = os.path.join(row["mount_point"], inner.lstrip("/"))
                        try:
                            with open(os.path.join(base, "cgroup.subtree_control")) as f:
                                delegated = "memory" in f.read().split()
                        except OSError as e:
                            raise OSError(f"cannot read {base}/cgroup.subtree_control ({e.strerror})") from e
                        if not delegated:
                            raise OSError(
                                f"cgroup v2: the memory controller is not enabled for sub-groups of {base} "
                                "(its cgroup.subtree_control lacks 'memory'; a delegated cgroup is needed)"
                            )
                        return 2, base
        raise OSError("no memory cgroup controller on this host")

    @classmethod
    def create(cls, limit_bytes, located=None):
        version, base = located or cls.locate()
        path = os.path.join(base, f"prism-sandbox-{os.getpid()}-{os.urandom(4).hex()}")
        os.mkdir(path)  # PermissionError / read-only cgroupfs: reported by the caller as unavailable
        group = cls(path, base, version)
        try:
            if version == 1:
                group._write("memory.limit_in_bytes", limit_bytes)
                group._write("memory.memsw.limit_in_bytes", limit_bytes, optional=True)  # no swap beyond it
            else:
                group._write("memory.max", limit_bytes)
                group._write("memory.swap.max", 0, optional=True)
        except OSError:
            group.remove()
            raise
        return group

    def _write(self, name, value, optional=False, directory=None):
        try:
            with open(os.path.join(directory or self.path, name), "w") as f:
                f.write(str(value))
        except OSError:
            if not optional:
                raise

    def fork(self):
        """``os.fork()`` with the child born inside this cgroup (the caller moves itself in and back out)."""
        self._write("cgroup.procs", os.getpid())
        pid = -1
        try:
            pid = os.fork()
        finally:
            if pid != 0:
                self._write("cgroup.procs", os.getpid(), directory=self.base)
        return pid

    def oom_kills(self):
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            with open(os.path.join(self.path, name)) as f:
                counts = dict(line.split() for line in f if len(line.split()) == 2)
        except OSError:
            return 0
        if "oom_kill" in counts:
            return int(counts["oom_kill"])
        try:  # kernels before 4.13 (v1) lack the counter: hitting the limit is the best available sign
            with open(os.path.join(self.path, "memory.failcnt")) as f:
                return int(f.read().strip() != "0")
        except OSError:
            return 0

    def remove(self):
        """Remove the (empty) cgroup; returns an error message when it could not be removed."""
        for _ in range(200):
            try:
                os.rmdir(self.path)
                return None
            except FileNotFoundError:
                return None
            except OSError as e:
                error = e
                time.sleep(0.005)  # the last process may still be leaving it
        return f"could not remove the memory cgroup {self.path} ({error.strerror})"


def _fork(cgroup):
    return cgroup.fork() if cgroup is not None else os.fork()


# ----------------------------------------------------------------------------------------------------------------
# privileges: capabilities and seccomp


def _capabilities():
    """The capability sets of this process from ``/proc/self/status`` (``{"CapEff": int, ...}``)."""
    with open("/proc/self/status") as f:
        return {k: int(v, 16) for k, v in (line.split(":", 1) for line in f if line.startswith("Cap"))}


CAP_SETPCAP = 8


def _drop_capabilities(drop_to):
    """Leave the process (and what it executes) without any capability, also as uid 0 of a user namespace.

    Returns ``None`` when no capability is left that the program could use, else why not. Without CAP_SETPCAP (a
    non-root caller) the bounding set cannot be emptied, but then there is nothing to drop: a non-root uid gains no
    capability on execve, and ``no_new_privs`` (set before) stops file capabilities and set-uid binaries.
    """
    import ctypes

    if _capabilities()["CapEff"] >> CAP_SETPCAP & 1:
        try:
            with open("/proc/sys/kernel/cap_last_cap") as f:
                last_cap = int(f.read())
        except (OSError, ValueError):
            last_cap = 40
        for cap in range(last_cap + 1):
            _prctl(PR_CAPBSET_DROP, cap)
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
        _prctl(PR_SET_SECUREBITS, SECUREBITS)
    if drop_to is not None:
        uid, gid = drop_to
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)

    class CapHeader(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class CapData(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    header, data = CapHeader(LINUX_CAPABILITY_VERSION_3, 0), (CapData * 2)()
    _check(_libc().capset(ctypes.byref(header), ctypes.byref(data)), "capset")
    caps = _capabilities()
    if caps["CapEff"] or caps["CapPrm"] or caps["CapInh"] or caps.get("CapAmb", 0):
        return f"capabilities left: {caps}"
    if caps["CapBnd"] and os.getuid() == 0:
        return "uid 0 with a non-empty bounding set (no CAP_SETPCAP to empty it)"
    return None


# x86-64 system call numbers (asm/unistd_64.h). Denied with EPERM: new programs (execve is allowed only with the
# exact pointers of the runner's own exec, see below), tracing other processes, (un)mounting and namespaces,
# memory outside the address-space limit (memfd, SysV shared memory), kernel attack surface an evaluated program never
# needs (bpf, io_uring, keyrings, userfaultfd, perf) and privileged calls (modules, reboot, swap, ...).
SYSCALLS_X86_64 = {
    "execve": 59, "execveat": 322, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
    "pidfd_getfd": 438, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272,
    "setns": 308, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "fspick": 433, "mount_setattr": 442, "memfd_create": 319, "memfd_secret": 447, "shmget": 29, "semget": 64,
    "msgget": 68, "userfaultfd": 323, "bpf": 321, "perf_event_open": 298, "add_key": 248, "request_key": 249,
    "keyctl": 250, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "kexec_load": 246,
    "kexec_file_load": 320, "init_module": 175, "finit_module": 313, "delete_module": 176,
    "open_by_handle_at": 304, "acct": 163, "swapon": 167, "swapoff": 168, "reboot": 169, "sethostname": 170,
    "setdomainname": 171, "iopl": 172, "ioperm": 173, "quotactl": 179, "vhangup": 153, "syslog": 103,
    "clone": 56, "clone3": 435, "socket": 41,
}
SECCOMP_DENIED = tuple(
    name for name in SYSCALLS_X86_64 if name not in ("execve", "clone", "clone3", "socket")
)
AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
NAMESPACE_CLONE_FLAGS = (
    CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
)
AF_UNIX = 1
EPERM = 1
ENOSYS = 38
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JGE_K, _BPF_JSET_K, _BPF_RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_NR, _ARCH = 0, 4


def _arg(index, high=False):
    """Offset of the low (or high) 32 bits of system call argument ``index`` in ``struct seccomp_data``."""
    return 16 + 8 * index + (4 if high else 0)


def _bpf(code, k, jt=0, jf=0):
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def seccomp_filter(exec_pointers):
    """The classic-BPF seccomp program (bytes of ``struct sock_filter``) for x86-64.

    Args:
        exec_pointers (`tuple[int, int, int]`): the exact ``(filename, argv, envp)`` pointers of the runner's own
            ``execve``. The only ``execve`` allowed is one with these three 64-bit values: they live in the
            address space that the ``execve`` replaces, so the program can neither know nor reproduce them.
    """
    deny = SECCOMP_RET_ERRNO | EPERM
    prog = [
        _bpf(_BPF_LD_W_ABS, _ARCH),
        _bpf(_BPF_JEQ_K, AUDIT_ARCH_X86_64, jt=1),
        _bpf(_BPF_RET_K, SECCOMP_RET_KILL_PROCESS),  # i386 / x32 entry points would bypass the numbers below
        _bpf(_BPF_LD_W_ABS, _NR),
        _bpf(_BPF_JGE_K, X32_SYSCALL_BIT, jf=1),
        _bpf(_BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
    ]
    for name in SECCOMP_DENIED:
        prog += [_bpf(_BPF_JEQ_K, SYSCALLS_X86_64[name], jf=1), _bpf(_BPF_RET_K, deny)]
    # clone3 passes its flags in memory, out of the filter's reach: ENOSYS makes libc fall back to clone
    prog += [_bpf(_BPF_JEQ_K, SYSCALLS_X86_64["clone3"], jf=1), _bpf(_BPF_RET_K, SECCOMP_RET_ERRNO | ENOSYS)]
    # clone: processes and threads yes, new namespaces no
    prog += [
        _bpf(_BPF_JEQ_K, SYSCALLS_X86_64["clone"], jf=4),
        _bpf(_BPF_LD_W_ABS, _arg(0)),
        _bpf(_BPF_JSET_K, NAMESPACE_CLONE_FLAGS, jf=1),
        _bpf(_BPF_RET_K, deny),
        _bpf(_BPF_RET_K, SECCOMP_RET_ALLOW),
    ]
    # socket: AF_UNIX only (no network even where there is no network namespace)
    prog += [
        _bpf(_BPF_JEQ_K, SYSCALLS_X86_64["socket"], jf=4),
        _bpf(_BPF_LD_W_ABS, _arg(0)),
        _bpf(_BPF_JEQ_K, AF_UNIX, jf=1),
        _bpf(_BPF_RET_K, SECCOMP_RET_ALLOW),
        _bpf(_BPF_RET_K, deny),
    ]
    # execve: only with the runner's own three pointers
    checks = []
    for index, pointer in enumerate(exec_pointers):
        checks += [(_arg(index), pointer & 0xFFFFFFFF), (_arg(index, high=True), pointer >> 32)]
    block_length = 1 + 2 * len(checks) + 2
    block = [_bpf(_BPF_JEQ_K, SYSCALLS_X86_64["execve"], jf=block_length - 1)]
    deny_at = block_length - 1
    for offset, value in checks:
        block.append(_bpf(_BPF_LD_W_ABS, offset))
        block.append(_bpf(_BPF_JEQ_K, value, jf=deny_at - len(block) - 1))
    block += [_bpf(_BPF_RET_K, SECCOMP_RET_ALLOW), _bpf(_BPF_RET_K, deny)]
    prog += block
    prog.append(_bpf(_BPF_RET_K, SECCOMP_RET_ALLOW))
    if len(prog) > 4096:
        raise ValueError("seccomp filter too long")
    return b"".join(prog)


def seccomp_supported():
    """``None`` when this machine can run :func:`seccomp_filter`, else why not."""
    machine = os.uname().machine
    if machine != "x86_64" or sys.maxsize <= 2**32:
        return f"the seccomp filter is written for x86-64, this machine is {machine}"
    return None


def _install_seccomp(program):
    import ctypes

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.addressof(buffer))
    _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog))


# ----------------------------------------------------------------------------------------------------------------
# processes


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


def _read_all(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _drain(fd):
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _exec_program(cfg, drop_to, fds, report_fd):
    """In the forked child: limits, descriptors, privileges, seccomp, then execve of the program interpreter.

    ``fds`` are the descriptors that become 0-4 (stdin, stdout, stderr, nonce, record). Reports the layers it set up
    (``S`` + JSON + newline) and then, if anything fails, a traceback (newline + ``E`` + text) through the
    close-on-exec ``report_fd``: a successful exec closes it after the first part.
    """
    report_fd = _fcntl_dupfd(report_fd, 16)  # out of the way of the descriptors 0-4 set below
    try:
        _setup_and_exec(cfg, drop_to, fds, report_fd)
    except BaseException:
        os.write(report_fd, b"\nE" + traceback.format_exc().encode(errors="replace"))
        os._exit(127)


def _setup_and_exec(cfg, drop_to, fds, report_fd):
    import ctypes

    os.setsid()
    # limits (lowering them needs no privilege; they hold for root too, except RLIMIT_NPROC)
    mem = cfg["memory_limit_bytes"]
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    fsize = cfg["max_file_size_bytes"]
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    cpu = math.ceil(cfg["timeout"]) + 1  # backstop only: the wall clock is enforced by the supervisor
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    if drop_to is not None:
        nproc = cfg["max_processes"]
    else:  # RLIMIT_NPROC counts every process of the real uid: leave room for what already runs
        nproc = _count_processes_of(os.getuid()) + cfg["max_processes"]
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    # descriptors 0-4; everything else is closed (the report pipe closes on exec)
    moved = [_fcntl_dupfd(fd, 16) for fd in fds]
    for target, fd in enumerate(moved):
        os.dup2(fd, target, inheritable=True)
    os.closerange(len(fds), report_fd)
    os.closerange(report_fd + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    nofile = cfg["max_open_files"]
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    layers, notes = [], []
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    layers.append("no_new_privs")
    problem = _drop_capabilities(drop_to)
    if problem is None:
        layers.append("no_capabilities")
    else:
        notes.append(f"capabilities not fully dropped ({problem})")
    # set after the uid change (which clears it): if the supervisor is killed, the program goes with it
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    os.chdir(cfg["workdir"])
    argv = [cfg["python"], "-I", "-B", "-c", cfg["runner_source"], "run", cfg["workdir"]]
    argv += ["1" if cfg["in_process_guard"] else "0", json.dumps(cfg["extra_sys_path"])]
    path = ctypes.create_string_buffer(os.fsencode(cfg["python"]))
    argv_bytes = [os.fsencode(a) for a in argv]
    env_bytes = [os.fsencode(f"{k}={v}") for k, v in cfg["env"].items()]
    argv_array = (ctypes.c_char_p * (len(argv_bytes) + 1))(*argv_bytes, None)
    env_array = (ctypes.c_char_p * (len(env_bytes) + 1))(*env_bytes, None)
    pointers = (ctypes.addressof(path), ctypes.addressof(argv_array), ctypes.addressof(env_array))
    execve = _libc().execve
    execve.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    if cfg["use_seccomp"]:
        unsupported = seccomp_supported()
        if unsupported:
            notes.append(f"seccomp unavailable ({unsupported})")
        else:
            try:
                _install_seccomp(seccomp_filter(pointers))
                layers.append("seccomp")
            except OSError as e:
                notes.append(f"seccomp unavailable ({e})")
    os.write(report_fd, b"S" + json.dumps({"isolation": layers, "notes": notes}).encode() + b"\n")
    execve(*pointers)
    err = ctypes.get_errno()
    raise OSError(err, f"execve {cfg['python']}: {os.strerror(err)}")


def _fcntl_dupfd(fd, lowest):
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)


def _start_program(cfg, drop_to, stdout_fd, stderr_fd, cgroup):
    """Fork and exec the program interpreter.

    Returns ``(pid, setup, record_fd, nonce)``: ``setup`` is ``(layers, notes)`` or the traceback (a str) of a failure
    before the program could start; ``record_fd`` the read end of the record pipe.
    """
    nonce = os.urandom(NONCE_HEX_CHARS // 2).hex().encode()
    nonce_read, nonce_write = os.pipe()
    os.write(nonce_write, nonce)  # into the kernel's pipe buffer; no write end survives the fork
    os.close(nonce_write)
    record_read, record_write = os.pipe()
    report_read, report_write = os.pipe()
    devnull = os.open(os.devnull, os.O_RDONLY)
    pid = _fork(cgroup)
    if pid == 0:
        try:
            os.close(report_read)
            os.close(record_read)
            _exec_program(cfg, drop_to, (devnull, stdout_fd, stderr_fd, nonce_read, record_write), report_write)
        except BaseException:
            try:
                os.write(report_write, b"\nE" + traceback.format_exc().encode(errors="replace"))
            finally:
                os._exit(127)
    for fd in (report_write, record_write, nonce_read, devnull):
        os.close(fd)
    data = _read_all(report_read)
    os.close(report_read)
    if data.startswith(b"S") and b"\nE" not in data:  # JSON never holds a raw newline
        report = json.loads(data[1:].split(b"\n", 1)[0])
        return pid, (report["isolation"], report["notes"]), record_read, nonce
    os.close(record_read)
    message = data.split(b"\nE", 1)[1] if b"\nE" in data else data
    return pid, message.decode(errors="replace") or "the program process exited before reporting", None, nonce


def _supervise_program(cfg, out, drop_to, stdout_fd, stderr_fd, in_pid_namespace, cgroup):
    """Run the program under the wall-clock limit and report as events; kill everything it started."""
    if not in_pid_namespace:
        try:
            _prctl(PR_SET_CHILD_SUBREAPER, 1)
        except OSError:
            pass
    # our memory and descriptors (the nonce, the result file) out of reach of a program running as our uid: a
    # non-dumpable process's /proc files belong to root (set only now: the setup above uses /proc/self)
    _prctl(PR_SET_DUMPABLE, 0)
    start = time.monotonic()
    deadline = start + cfg["timeout"]
    pid, setup, record_fd, nonce = _start_program(cfg, drop_to, stdout_fd, stderr_fd, cgroup)
    if isinstance(setup, str):
        os.waitpid(pid, 0)
        _emit(out, "error", message=f"could not start the program:\n{setup}")
        return
    _emit(out, "setup", isolation=setup[0], notes=setup[1])
    os.set_blocking(record_fd, False)
    record, ready, completed, status = b"", False, False, None

    def read_record():
        nonlocal record, ready, completed
        data = _drain(record_fd)
        if len(record) <= 64:  # a valid record is 2 + 32 bytes: whatever a program floods the pipe with is dropped
            record += data[:64]
        if not ready and record[:1] == READY:
            ready = True
            _emit(out, "ready")
        if not completed and record == READY + DONE + nonce:
            completed = True
            _emit(out, "completed")

    while True:
        read_record()
        done = _reap_all()
        if pid in done:
            status = done[pid]
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(0.002)
    duration = time.monotonic() - start
    read_record()
    if status is None:
        report = {"outcome": "timeout"}
    elif os.WIFEXITED(status):
        report = {"outcome": "exited", "code": os.WEXITSTATUS(status)}
    else:
        report = {"outcome": "signaled", "signal": os.WTERMSIG(status)}
    if record and not completed and len(record) > 1:
        report["record"] = "the completion record did not match: the program wrote to the runner's descriptor 4"
    _emit(out, "exit", duration=duration, **report)
    os.close(record_fd)
    if not in_pid_namespace:
        _kill_descendants()  # in a pid namespace the kernel does it when its init exits


def _run_as_init(cfg, out, stdout_fd, stderr_fd, is_root, user_namespace, in_pid_namespace, run_uid, cgroup):
    """Body of the (namespace) init process, or of the supervisor itself without a pid namespace."""
    layers, notes = [], []
    mount_ns = False
    if cfg["use_namespaces"] and (is_root or user_namespace):
        try:
            _unshare(CLONE_NEWNS)
            _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount may leak to the host
            mount_ns = True
            layers.append("mount_namespace")
        except OSError as e:
            notes.append(f"mount namespace unavailable ({e})")
    if mount_ns and in_pid_namespace:
        try:
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            layers.append("private_proc")
        except OSError as e:
            notes.append(f"could not mount a private /proc ({e})")
    drop_to = None
    if is_root and not user_namespace:
        reachable = all(_world_accessible(p) for p in cfg["needed_paths"])
        if not reachable and mount_ns:
            try:
                _open_path_to(cfg["needed_paths"])
                reachable = all(_world_accessible(p) for p in cfg["needed_paths"])
            except OSError as e:
                notes.append(f"could not expose the interpreter to an unprivileged uid ({e})")
        if reachable:
            drop_to = (run_uid, run_uid)
            layers.append("unprivileged_uid")
        else:
            notes.append("interpreter not readable by an unprivileged uid: program runs as root")
    owner = drop_to or (os.getuid(), os.getgid())
    with open(os.path.join(cfg["workdir"], "program.py"), "rb") as f:
        program = f.read()
    if mount_ns:
        problem = _make_mounts_read_only()
        if problem is None:
            layers.append("read_only_root")
        else:
            notes.append(f"the file system could not be made read-only ({problem})")
        try:
            masked = _mask_temp_dirs(cfg, owner, program)
            layers.append("private_workdir")
            if masked:
                layers.append("private_tmp")
        except OSError as e:
            notes.append(f"could not mount private temporary directories ({e})")
    else:
        os.chown(cfg["workdir"], *owner)
    if cfg["in_process_guard"]:
        layers.append("audit_hook")
    _emit(out, "setup", isolation=layers, notes=notes)
    _supervise_program(cfg, out, drop_to, stdout_fd, stderr_fd, in_pid_namespace, cgroup)


def supervise(config_path):
    with open(config_path) as f:
        cfg = json.load(f)
    out = os.open(cfg["result_path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    stdout_fd = os.open(cfg["stdout_path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    stderr_fd = os.open(cfg["stderr_path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    layers, notes = ["rlimits", "own_session", "minimal_environment"], []
    is_root = os.geteuid() == 0
    cgroup = None
    try:
        cgroup = MemoryCgroup.create(cfg["memory_limit_bytes"])
        layers.append("memory_cgroup")
        _emit(out, "cgroup", path=cgroup.path)
    except OSError as e:
        notes.append(f"memory cgroup unavailable ({e})")
    namespaces = 0
    if cfg["use_namespaces"]:
        wanted = CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC
        if not is_root:
            wanted |= CLONE_NEWUSER
        uid, gid = os.getuid(), os.getgid()
        try:
            _unshare(wanted)
            namespaces = wanted
        except OSError as e:
            notes.append(f"pid/network/IPC namespaces unavailable ({e})")
        if namespaces & CLONE_NEWUSER:
            with open("/proc/self/setgroups", "w") as f:
                f.write("deny")
            with open("/proc/self/uid_map", "w") as f:
                f.write(f"0 {uid} 1")
            with open("/proc/self/gid_map", "w") as f:
                f.write(f"0 {gid} 1")
            layers.append("user_namespace")
    if namespaces:
        layers += ["pid_namespace", "network_namespace", "ipc_namespace"]
    user_namespace = bool(namespaces & CLONE_NEWUSER)
    in_pid_namespace = bool(namespaces & CLONE_NEWPID)
    _emit(out, "setup", isolation=layers, notes=notes)
    # a fresh uid per supervisor (pids are unique while it lives), so parallel sandboxes never share a process budget
    run_uid = cfg["uid"] if cfg["uid"] is not None else UID_BASE + os.getpid()
    args = (cfg, out, stdout_fd, stderr_fd, is_root, user_namespace, in_pid_namespace, run_uid)
    try:
        if not in_pid_namespace:
            _run_as_init(*args, cgroup)
            return
        # the first child in a new pid namespace is its init: when it exits, the kernel kills all that is left
        init = _fork(cgroup)
        if init == 0:
            try:
                _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the supervisor killed => the whole namespace goes
                _run_as_init(*args, None)
                os._exit(0)
            except BaseException:
                _emit(out, "error", message=traceback.format_exc())
                os._exit(1)
        _prctl(PR_SET_DUMPABLE, 0)
        backstop = time.monotonic() + cfg["timeout"] + 10.0
        while True:
            pid, status = os.waitpid(init, os.WNOHANG)  # returns once every process of the namespace is gone
            if pid:
                break
            if time.monotonic() > backstop:
                os.kill(init, signal.SIGKILL)
                _, status = os.waitpid(init, 0)
                break
            time.sleep(0.002)
        if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
            signum = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
            _emit(out, "init_died", signal=signum, code=os.WEXITSTATUS(status) if signum is None else None)
    finally:
        if cgroup is not None:
            _emit(out, "oom", kills=cgroup.oom_kills())
            problem = cgroup.remove()
            if problem:
                _emit(out, "note", message=problem)


# ----------------------------------------------------------------------------------------------------------------
# program side (runs as the unprivileged uid, in the program's interpreter; ctypes is never imported here)


def _install_guard(workdir):
    """Second layer: an audit hook that refuses network access, new programs, signals to processes other than itself
    and its children (a ``multiprocessing`` pool terminates its workers), writes outside ``workdir``, reading other
    processes' ``/proc`` entries, and ``ctypes``. It cannot be removed from Python code; native code could bypass it,
    which is what the kernel layers are for.

    ``_posixsubprocess.fork_exec`` starts programs without any audit event (``subprocess`` raises its own event
    first, ``multiprocessing``'s spawn does not): the module is imported now and its ``fork_exec`` replaced (the
    original is then unreachable), and loading the module again is refused.
    """
    import socket
    import subprocess

    import _posixsubprocess

    def no_programs(*args, **kwargs):
        raise PermissionError("sandbox: starting programs is not allowed")

    _posixsubprocess.fork_exec = no_programs
    subprocess._fork_exec = no_programs

    workdir = os.path.realpath(workdir)
    allowed = (workdir, os.devnull)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    refused = {
        "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr", "socket.connect", "socket.bind",
        "socket.sendto", "socket.sendmsg", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "subprocess.Popen",
        "os.killpg", "signal.pthread_kill", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata",
        "ctypes.call_function", "os.chroot", "pty.spawn",
    }
    refused_imports = {"ctypes", "_ctypes", "_posixsubprocess", "_testcapi", "_testinternalcapi", "_xxsubinterpreters"}
    path_events = {
        "os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.chmod": (0,), "os.chown": (0,),
        "os.rename": (0, 1), "os.link": (0, 1), "os.symlink": (1,), "os.truncate": (0,), "os.utime": (0,),
        "shutil.rmtree": (0,), "os.chflags": (0,), "os.mkfifo": (0,), "os.mknod": (0,), "os.removexattr": (0,),
        "os.setxattr": (0,),
    }

    def foreign_proc(path):
        """A path into another process's /proc entry (its environment, memory, descriptors)."""
        if isinstance(path, int):
            return False
        path = os.fsdecode(path) if isinstance(path, bytes) else os.fspath(path)
        for candidate in (os.path.abspath(path), os.path.realpath(path)):
            parts = candidate.split(os.sep)
            if len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and int(parts[2]) != os.getpid():
                return True
        return False

    def inside(path):
        if isinstance(path, int):
            return True  # an already open descriptor: the open was checked
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        real = os.path.realpath(os.fspath(path))
        return any(real == a or real.startswith(a + os.sep) for a in allowed)

    def own_child(pid):
        try:  # succeeds only for a child of this process; WNOWAIT leaves its status to be collected
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            return True
        except (ChildProcessError, OSError):
            return False

    def hook(event, args):
        if event == "os.kill" and not (args[0] == os.getpid() or (args[0] > 0 and own_child(args[0]))):
            raise PermissionError("sandbox: os.kill of a process other than itself or its children is not allowed")
        if event in refused:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import" and args[0] in refused_imports:
            raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
        if event == "socket.__new__" and args[1] not in (getattr(socket, "AF_UNIX", -1),):
            raise PermissionError("sandbox: network sockets are not allowed")
        if event in ("open", "os.listdir", "os.scandir") and args and args[0] is not None and foreign_proc(args[0]):
            raise PermissionError(f"sandbox: reading another process's /proc entry is not allowed: {args[0]!r}")
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


def run(workdir, guard, extra_sys_path):
    # Everything used after the program ran is bound now: the program may rebind module attributes and builtins.
    read, write, exit_now = os.read, os.write, os._exit
    settrace, setprofile = sys.settrace, sys.setprofile
    print_exception = traceback.print_exception
    stdout, stderr = sys.stdout, sys.stderr
    memory_error, base_exception = MemoryError, BaseException
    sys.path.extend(p for p in json.loads(extra_sys_path) if os.path.isdir(p))
    with open(os.path.join(workdir, "program.py"), "rb") as f:
        source = f.read()
    if guard == "1":
        _install_guard(workdir)
    # the program runs as the real __main__ module, so that what it defines pickles by reference (multiprocessing)
    main = type(sys)("__main__")
    main.__file__ = os.path.join(workdir, "program.py")
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    write(RECORD_FD, READY)
    try:
        exec(compile(source, "program.py", "exec"), main.__dict__)
    except memory_error:
        try:
            write(2, b"MemoryError\n")
        finally:
            exit_now(MEMORY_EXIT_CODE)
    except base_exception as exc:  # SystemExit included: a program that stops early did not run its checks
        settrace(None)
        setprofile(None)
        try:
            stdout.flush()
            print_exception(exc, file=stderr)
            stderr.flush()
        except memory_error:
            exit_now(MEMORY_EXIT_CODE)
        except base_exception:
            pass
        exit_now(1)
    # exec returned: the whole program ran. Only now is the nonce read (it waited in the pipe) and reported.
    settrace(None)
    setprofile(None)
    try:
        nonce = read(NONCE_FD, 2 * NONCE_HEX_CHARS)
    except base_exception:
        nonce = b""
    if len(nonce) == NONCE_HEX_CHARS:
        write(RECORD_FD, DONE + nonce)
    for stream in (stdout, stderr):
        try:
            stream.flush()
        except base_exception:
            pass
    exit_now(0 if len(nonce) == NONCE_HEX_CHARS else 1)


if __name__ == "__main__":
    if sys.argv[1] == "supervise":
        supervise(sys.argv[2])
    elif sys.argv[1] == "run":
        run(*sys.argv[2:5])
    else:
        raise SystemExit(f"unknown mode {sys.argv[1]!r}")
