"""Linux isolation primitives through libc (ctypes): namespaces, mounts, Landlock, rlimits, uid drop.

Every function raises OSError on failure so the caller can fall back and record what it lost.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import struct

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND = 0x1, 0x2, 0x4, 0x20, 0x1000
MS_REC, MS_PRIVATE = 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38

_SYS_LANDLOCK_CREATE_RULESET, _SYS_LANDLOCK_ADD_RULE, _SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1
# Filesystem rights that change something (reads and execution stay allowed everywhere).
_FS_WRITE_FILE, _FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 1, 1 << 14, 1 << 15
_FS_WRITE_V1 = (1 << 1) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12)
_FS_REFER = 1 << 13
_NET_ALL = (1 << 0) | (1 << 1)           # bind / connect TCP (ABI >= 4)
_SCOPE_ALL = (1 << 0) | (1 << 1)         # abstract unix sockets / signals (ABI >= 6)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def make_mounts_private() -> None:
    _check(_libc.mount(b"none", b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None), "mount --make-rprivate /")


def mount_tmpfs(path: str, size_bytes: int, uid: int, mode: str = "0700") -> None:
    opts = f"size={size_bytes},mode={mode},uid={uid},gid={uid}".encode()
    _check(_libc.mount(b"tmpfs", path.encode(), b"tmpfs", ctypes.c_ulong(MS_NOSUID | MS_NODEV), opts),
           f"mount tmpfs on {path}")


def bind_readonly(fd: int, target: str) -> None:
    """Bind what `fd` (an O_PATH handle opened before `target` was covered by another mount) points
    at onto `target`, read-only. This is how a venv under /tmp stays importable once /tmp is hidden."""
    src = f"/proc/self/fd/{fd}".encode()
    _check(_libc.mount(src, target.encode(), None, ctypes.c_ulong(MS_BIND | MS_REC), None), f"bind {target}")
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
    _check(_libc.mount(None, target.encode(), None, ctypes.c_ulong(flags), None), f"remount {target} read-only")


def mount_proc() -> None:
    """A procfs of the caller's own PID namespace over /proc: host processes (and their environ and
    cmdline, which may carry API keys) disappear from view. Needs a private mount namespace."""
    _check(_libc.mount(b"proc", b"/proc", b"proc", ctypes.c_ulong(MS_NOSUID | MS_NODEV | 0x8), None), "mount proc")


def prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0),
                       ctypes.c_ulong(0)), f"prctl({option})")


def landlock_abi() -> int:
    """0 when Landlock is unavailable."""
    ret = _libc.syscall(ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0),
                        ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION))
    return int(ret) if ret > 0 else 0


_FS_READ = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read file, read dir


def landlock_restrict(writable_dirs: list[str], writable_files: list[str] = (),
                      readable: list[str] | None = None) -> int:
    """Deny every filesystem modification outside `writable_dirs` (and TCP bind/connect, and signals or
    abstract sockets leaving the domain, where the ABI has them). With `readable`, reads and execution
    are also limited to those paths (files or directories) plus the writable ones. Returns the ABI used."""
    abi = landlock_abi()
    if abi < 1:
        raise OSError("landlock unavailable")
    fs = _FS_WRITE_V1 | (_FS_REFER if abi >= 2 else 0) | (_FS_TRUNCATE if abi >= 3 else 0) | \
        (_FS_IOCTL_DEV if abi >= 5 else 0) | (_FS_READ if readable is not None else 0)
    net = _NET_ALL if abi >= 4 else 0
    scoped = _SCOPE_ALL if abi >= 6 else 0
    attr = struct.pack("QQQ", fs, net, scoped)
    size = 24 if abi >= 6 else 16
    buf = ctypes.create_string_buffer(attr[:size], size)
    fd = _check(_libc.syscall(ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET), buf, ctypes.c_size_t(size),
                              ctypes.c_uint32(0)), "landlock_create_ruleset")
    try:
        file_rights = _FS_WRITE_FILE | (_FS_TRUNCATE if abi >= 3 else 0)
        read_file_rights = (1 << 0) | (1 << 2)
        rules = [(d, fs) for d in writable_dirs] + [(f, file_rights | (read_file_rights if readable is not None else 0))
                                                    for f in writable_files]
        for path in readable or []:
            if os.path.isdir(path):
                rules.append((path, _FS_READ))
            elif os.path.exists(path):
                rules.append((path, read_file_rights))
        for path, rights in rules:
            pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = ctypes.create_string_buffer(struct.pack("=Qi", rights, pfd), 12)
                _check(_libc.syscall(ctypes.c_long(_SYS_LANDLOCK_ADD_RULE), ctypes.c_int(fd),
                                     ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH), rule, ctypes.c_uint32(0)),
                       f"landlock_add_rule {path}")
            finally:
                os.close(pfd)
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        _check(_libc.syscall(ctypes.c_long(_SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(fd), ctypes.c_uint32(0)),
               "landlock_restrict_self")
    finally:
        os.close(fd)
    return abi


_PR_CAPBSET_DROP, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4
_SYS_CAPSET = 126
_CAP_V3 = 0x20080522


def drop_capabilities() -> None:
    """Empty every capability set, the bounding set included, so that even uid 0 (and anything it
    execs) cannot mount, load modules, trace, use raw sockets or override file permissions."""
    for cap in range(64):
        if _libc.prctl(ctypes.c_int(_PR_CAPBSET_DROP), ctypes.c_ulong(cap), ctypes.c_ulong(0), ctypes.c_ulong(0),
                       ctypes.c_ulong(0)) != 0:
            if ctypes.get_errno() == 22:  # EINVAL: past the last capability this kernel knows
                break
            _check(-1, f"PR_CAPBSET_DROP {cap}")
    _libc.prctl(ctypes.c_int(_PR_CAP_AMBIENT), ctypes.c_ulong(_PR_CAP_AMBIENT_CLEAR_ALL), ctypes.c_ulong(0),
                ctypes.c_ulong(0), ctypes.c_ulong(0))
    header = (ctypes.c_uint32 * 2)(_CAP_V3, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(_libc.syscall(ctypes.c_long(_SYS_CAPSET), header, data), "capset")


def drop_privileges(uid: int) -> None:
    """Become an unprivileged uid/gid (only possible as root). RLIMIT_NPROC then binds."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def set_limits(*, address_space: int | None, cpu_s: int | None, fsize: int | None, nofile: int | None,
               nproc: int | None) -> None:
    def lim(which: int, value: int | None, hard_extra: int = 0) -> None:
        if value is not None:
            resource.setrlimit(which, (value, value + hard_extra))

    lim(resource.RLIMIT_CORE, 0)
    lim(resource.RLIMIT_AS, address_space)
    lim(resource.RLIMIT_CPU, cpu_s, hard_extra=1)
    lim(resource.RLIMIT_FSIZE, fsize)
    lim(resource.RLIMIT_NOFILE, nofile)
    lim(resource.RLIMIT_NPROC, nproc)


def current_vm_size() -> int:
    """Virtual size of this process (the address-space limit is set relative to it)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


PIDS_CGROUP_ROOT = "/sys/fs/cgroup/pids"


def create_pids_cgroup(name: str, max_pids: int) -> str:
    """A cgroup-v1 pids group (binds root too, unlike RLIMIT_NPROC)."""
    path = os.path.join(PIDS_CGROUP_ROOT, name)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "pids.max"), "w") as fh:
        fh.write(str(max_pids))
    return path


def join_cgroup(path: str) -> None:
    with open(os.path.join(path, "cgroup.procs"), "w") as fh:
        fh.write(str(os.getpid()))


def remove_cgroup(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass
