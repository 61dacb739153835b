"""Linux isolation primitives through libc (ctypes): namespaces, mounts, Landlock, rlimits, uid drop.

Every function raises OSError on failure so the caller can fall back and record what it lost.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import resource
import struct
from dataclasses import dataclass

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
    drop_bounding_set()
    header = (ctypes.c_uint32 * 2)(_CAP_V3, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(_libc.syscall(ctypes.c_long(_SYS_CAPSET), header, data), "capset")


def drop_bounding_set() -> None:
    """Empty the bounding and ambient sets (needs CAP_SETPCAP: call it before dropping to another uid,
    which then clears the permitted and effective sets)."""
    for cap in range(64):
        if _libc.prctl(ctypes.c_int(_PR_CAPBSET_DROP), ctypes.c_ulong(cap), ctypes.c_ulong(0), ctypes.c_ulong(0),
                       ctypes.c_ulong(0)) != 0:
            if ctypes.get_errno() == 22:  # EINVAL: past the last capability this kernel knows
                break
            _check(-1, f"PR_CAPBSET_DROP {cap}")
    _libc.prctl(ctypes.c_int(_PR_CAP_AMBIENT), ctypes.c_ulong(_PR_CAP_AMBIENT_CLEAR_ALL), ctypes.c_ulong(0),
                ctypes.c_ulong(0), ctypes.c_ulong(0))


PR_SET_DUMPABLE = 4


def drop_privileges(uid: int) -> None:
    """Become an unprivileged uid/gid (only possible as root). RLIMIT_NPROC then binds. The process
    stays "dumpable" so that its own /proc/self files belong to it (core dumps are off: RLIMIT_CORE)."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    prctl(PR_SET_DUMPABLE, 1)


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


# ------------------------------------------------------------------------------ minimal filesystem view

MNT_DETACH = 0x2
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}


def machine() -> str:
    return os.uname().machine


def bind(source: str, target: str, *, readonly: bool = True, rec: bool = True, nodev: bool = True) -> None:
    """Bind `source` (a path of the current view) onto `target`; read-only, nosuid (and nodev) by default."""
    _check(_libc.mount(source.encode(), target.encode(), None, ctypes.c_ulong(MS_BIND | (MS_REC if rec else 0)), None),
           f"bind {source} on {target}")
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | (MS_RDONLY if readonly else 0) | (MS_NODEV if nodev else 0)
    _check(_libc.mount(None, target.encode(), None, ctypes.c_ulong(flags), None), f"remount {target}")


def remount_readonly(target: str) -> None:
    flags = MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
    _check(_libc.mount(None, target.encode(), None, ctypes.c_ulong(flags), None), f"remount {target} read-only")


def pivot_root(new_root: str) -> None:
    """Make `new_root` (a mount point) the root of this mount namespace and detach the old root:
    nothing of the host's tree that was not bound into `new_root` stays reachable."""
    nr = _SYS_PIVOT_ROOT.get(machine())
    if nr is None:
        raise OSError(f"pivot_root: unknown syscall number on {machine()}")
    os.chdir(new_root)
    _check(_libc.syscall(ctypes.c_long(nr), b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", ctypes.c_int(MNT_DETACH)), "umount the old root")
    os.chdir("/")


_DEVICES = ("null", "zero", "random", "urandom")


def _place(new_root: str, path: str) -> str:
    """The path of `path` inside `new_root`, its parent directories created (0755)."""
    target = new_root.rstrip("/") + path
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    return target


def _outermost(paths) -> list[str]:
    out: list[str] = []
    for p in sorted(set(paths), key=len):
        if not any(os.path.commonpath([p, o]) == o for o in out):
            out.append(p)
    return out


@dataclass(frozen=True)
class RootPlan:
    """What build_root puts in a minimal root: real directories/files to bind, symlinks to copy."""
    binds: tuple[str, ...]
    links: tuple[tuple[str, str], ...]   # (path, link target)


def plan_root(read_only: list[str]) -> RootPlan:
    """The bind list for `read_only` host paths: their real places, outermost only (binding those
    covers the rest), plus each path that is itself a symlink (/bin -> usr/bin) as a symlink.
    Computed once per fork server: path resolution costs more than the mounts."""
    present = [p for p in read_only if os.path.lexists(p)]
    binds = _outermost(os.path.realpath(p) for p in present if os.path.exists(p))
    links = tuple((p, os.readlink(p)) for p in present
                  if os.path.islink(p) and not any(os.path.commonpath([p, b]) == b for b in binds))
    return RootPlan(tuple(binds), links)


def build_root(new_root: str, plan: RootPlan, size_bytes: int = 4 << 20) -> None:
    """Mount a tmpfs on `new_root` and fill it with `plan` (host paths bound read-only at their real
    place, symlinks copied), a /dev of only null, zero, random and urandom, and an empty /proc mount
    point. Directories created on the way are 0755, so a path under a directory an unprivileged uid
    cannot traverse (an interpreter under /root, mode 0700) becomes reachable, while the rest of that
    directory does not exist in the new view."""
    mount_tmpfs(new_root, size_bytes, 0, mode="0755")
    for path in plan.binds:
        _bind_path(new_root, path)
    for path, link in plan.links:
        target = _place(new_root, path)
        if not os.path.lexists(target):
            os.symlink(link, target)
    dev = os.path.dirname(_place(new_root, "/dev/null"))
    mount_tmpfs(dev, 64 << 10, 0, mode="0755")
    for name in _DEVICES:
        node = os.path.join(dev, name)
        open(node, "a").close()
        bind(f"/dev/{name}", node, readonly=name != "null", rec=False, nodev=False)
    for name, link in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                       ("stderr", "/proc/self/fd/2")):
        os.symlink(link, os.path.join(dev, name))
    remount_readonly(dev)
    os.makedirs(new_root.rstrip("/") + "/proc", mode=0o555, exist_ok=True)


def _bind_path(new_root: str, path: str) -> None:
    target = _place(new_root, path)
    if os.path.isdir(path):
        os.makedirs(target, mode=0o755, exist_ok=True)
    elif not os.path.exists(target):
        open(target, "a").close()
    bind(path, target)


# ------------------------------------------------------------------------------------------ seccomp

PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_EPERM, _EACCES, _ENOSYS = 1, 13, 38
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_X32_SYSCALL_BIT = 0x40000000
AF_NETLINK, AF_PACKET, AF_VSOCK, AF_UNIX = 16, 17, 40, 1
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET (CLONE_NEWTIME, 0x80, overlaps the exit-signal
# byte of clone() and exists only for clone3/unshare, both denied outright)
_CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
# Syscalls that are denied with EPERM. Metadata of files (Landlock does not mediate it), kernel
# interfaces a Python program has no use for that widen the attack surface (keyrings, io_uring, which
# could also create sockets past the socket() rule, ptrace, BPF, perf, userfaultfd), and
# namespace / mount changes (already impossible without capabilities; defence in depth).
_DENY = ("chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat", "utime", "utimes",
         "utimensat", "futimesat", "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr",
         "fremovexattr", "setxattrat", "removexattrat", "ptrace", "process_vm_readv", "process_vm_writev", "keyctl",
         "add_key", "request_key", "io_uring_setup", "io_uring_enter", "io_uring_register", "bpf", "perf_event_open",
         "userfaultfd", "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "open_by_handle_at",
         "name_to_handle_at", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr")
SYSCALLS = {
    # x86_64: arch/x86/entry/syscalls/syscall_64.tbl
    "x86_64": dict(chmod=90, fchmod=91, fchmodat=268, fchmodat2=452, chown=92, fchown=93, lchown=94, fchownat=260,
                   utime=132, utimes=235, utimensat=280, futimesat=261, setxattr=188, lsetxattr=189, fsetxattr=190,
                   removexattr=197, lremovexattr=198, fremovexattr=199, setxattrat=463, removexattrat=466,
                   ptrace=101, process_vm_readv=310, process_vm_writev=311, keyctl=250, add_key=248,
                   request_key=249, io_uring_setup=425, io_uring_enter=426, io_uring_register=427, bpf=321,
                   perf_event_open=298, userfaultfd=323, unshare=272, setns=308, mount=165, umount2=166,
                   pivot_root=155, chroot=161, open_by_handle_at=304, name_to_handle_at=303, open_tree=428,
                   move_mount=429, fsopen=430, fsconfig=431, fsmount=432, fspick=433, mount_setattr=442,
                   socket=41, clone=56, clone3=435),
    # aarch64: include/uapi/asm-generic/unistd.h (no chmod/chown/lchown/utime/utimes/futimesat there)
    "aarch64": dict(fchmod=52, fchmodat=53, fchmodat2=452, fchown=55, fchownat=54, utimensat=88, setxattr=5,
                    lsetxattr=6, fsetxattr=7, removexattr=14, lremovexattr=15, fremovexattr=16, setxattrat=463,
                    removexattrat=466, ptrace=117, process_vm_readv=270, process_vm_writev=271, keyctl=219,
                    add_key=217, request_key=218, io_uring_setup=425, io_uring_enter=426, io_uring_register=427,
                    bpf=280, perf_event_open=241, userfaultfd=282, unshare=97, setns=268, mount=40, umount2=39,
                    pivot_root=41, chroot=51, open_by_handle_at=265, name_to_handle_at=264, open_tree=428,
                    move_mount=429, fsopen=430, fsconfig=431, fsmount=432, fspick=433, mount_setattr=442,
                    socket=198, clone=220, clone3=435),
}
DENIED_SOCKET_FAMILIES = (AF_UNIX, AF_NETLINK, AF_PACKET, AF_VSOCK)


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


_LD_W_ABS, _JEQ_K, _JSET_K, _JGE_K, _RET_K = 0x20, 0x15, 0x45, 0x35, 0x06


@functools.lru_cache(maxsize=None)
def seccomp_program(arch: str) -> bytes:
    """The BPF program (classic BPF, struct sock_filter[]) for `arch`: the syscalls in _DENY fail with
    EPERM; socket() for the families in DENIED_SOCKET_FAMILIES (pathname/abstract unix sockets,
    netlink, raw packets, vsock: channels out of the sandbox that no network namespace covers) fails with
    EACCES; clone() with a namespace flag fails with EPERM and clone3() (whose flags a filter cannot read)
    with ENOSYS, so that libc falls back to clone(); any other architecture's calling convention (i386
    or x32 syscalls on x86_64) is denied outright."""
    if arch not in SYSCALLS:
        raise OSError(f"seccomp: no syscall table for {arch}")
    nrs = SYSCALLS[arch]
    deny = [nrs[name] for name in _DENY if name in nrs]
    prog: list[bytes] = [_insn(_LD_W_ABS, 4)]                                  # A = arch
    prog.append(_insn(_JEQ_K, _AUDIT_ARCH[arch], jt=1, jf=0))
    prog.append(_insn(_RET_K, _RET_ERRNO | _EPERM))
    prog.append(_insn(_LD_W_ABS, 0))                                           # A = nr
    if arch == "x86_64":
        prog.append(_insn(_JGE_K, _X32_SYSCALL_BIT, jt=0, jf=1))
        prog.append(_insn(_RET_K, _RET_ERRNO | _EPERM))
    for nr in deny:
        prog.append(_insn(_JEQ_K, nr, jt=0, jf=1))
        prog.append(_insn(_RET_K, _RET_ERRNO | _EPERM))
    prog.append(_insn(_JEQ_K, nrs["clone3"], jt=0, jf=1))
    prog.append(_insn(_RET_K, _RET_ERRNO | _ENOSYS))
    # clone(flags, ...): flags is args[0]; its low 32 bits lie at offset 16 (little-endian)
    prog.append(_insn(_JEQ_K, nrs["clone"], jt=0, jf=3))
    prog.append(_insn(_LD_W_ABS, 16))
    prog.append(_insn(_JSET_K, _CLONE_NAMESPACES, jt=0, jf=len(DENIED_SOCKET_FAMILIES) * 2 + 3))
    prog.append(_insn(_RET_K, _RET_ERRNO | _EPERM))
    # socket(family, ...): family is args[0]
    prog.append(_insn(_JEQ_K, nrs["socket"], jt=0, jf=len(DENIED_SOCKET_FAMILIES) * 2 + 1))
    prog.append(_insn(_LD_W_ABS, 16))
    for fam in DENIED_SOCKET_FAMILIES:
        prog.append(_insn(_JEQ_K, fam, jt=0, jf=1))
        prog.append(_insn(_RET_K, _RET_ERRNO | _EACCES))
    prog.append(_insn(_RET_K, _RET_ALLOW))
    return b"".join(prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_restrict() -> str:
    """Install seccomp_program() for this machine on the calling thread (inherited by every child and
    never removable). Sets no_new_privs. Returns the architecture; raises OSError elsewhere."""
    arch = machine()
    code = seccomp_program(arch)
    buf = ctypes.create_string_buffer(code, len(code))
    prog = _SockFprog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    _check(_libc.prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER),
                       ctypes.cast(ctypes.pointer(prog), ctypes.c_void_p), ctypes.c_ulong(0), ctypes.c_ulong(0)),
           "seccomp filter")
    return arch


# ------------------------------------------------------------------------------------------ cgroups

CGROUP_CONTROLLERS = ("memory", "cpu", "pids")


def cgroup_parents() -> tuple[str, dict[str, str]]:
    """("v1", {controller: the directory of this process's own cgroup in that hierarchy}) for a
    cgroup-v1 (or hybrid) host, ("v2", {...}) for a unified host whose root offers the controllers,
    ("", {}) without either. New cgroups are created beneath this process's own, so whatever
    accounting the host applies to us still covers the replies."""
    mounts: dict[str, str] = {}
    v2_mount = None
    with open("/proc/self/mounts") as fh:
        for line in fh:
            dev, mnt, fstype, opts = line.split()[:4]
            if fstype == "cgroup":
                for opt in opts.split(","):
                    if opt in CGROUP_CONTROLLERS:
                        mounts[opt] = mnt
            elif fstype == "cgroup2" and v2_mount is None:
                v2_mount = mnt
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in ctrls.split(",") if ctrls else [""]:
                own[c] = path
    if mounts:
        return "v1", {c: os.path.join(m, own.get(c, "/").lstrip("/")) for c, m in mounts.items()}
    if v2_mount:
        base = os.path.join(v2_mount, own.get("", "/").lstrip("/"))
        try:
            with open(os.path.join(base, "cgroup.controllers")) as fh:
                have = fh.read().split()
        except OSError:
            have = []
        return "v2", {c: base for c in CGROUP_CONTROLLERS if c in have}
    return "", {}


def _write(path: str, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


@dataclass
class SlotCgroup:
    """One worker slot's cgroups (a directory per v1 controller, or one v2 directory)."""
    version: str
    dirs: dict[str, str]                     # controller -> directory

    def procs(self, controller: str) -> str:
        return os.path.join(self.dirs[controller], "cgroup.procs")

    def peak_file(self) -> str | None:
        if "memory" not in self.dirs:
            return None
        name = "memory.max_usage_in_bytes" if self.version == "v1" else "memory.peak"
        return os.path.join(self.dirs["memory"], name)

    def kill_all(self, timeout_s: float = 2.0) -> None:
        """SIGKILL every task in these cgroups until they are empty (or `timeout_s` passed)."""
        import signal
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pids: set[int] = set()
            for d in set(self.dirs.values()):
                try:
                    with open(os.path.join(d, "cgroup.procs")) as fh:
                        pids.update(int(x) for x in fh.read().split())
                except OSError:
                    pass
            pids.discard(os.getpid())
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.02)

    def remove(self) -> None:
        for d in set(self.dirs.values()):
            remove_cgroup(d)


def create_slot_cgroup(name: str, *, memory_bytes: int | None, cpus: float | None, max_pids: int | None,
                       controllers: tuple[str, ...] = CGROUP_CONTROLLERS) -> SlotCgroup:
    """Cgroups named `name` under this process's own, with memory (anonymous + shmem/memfd + tmpfs,
    swap included where accounted) capped at `memory_bytes`, CPU bandwidth capped at `cpus` CPUs and
    an equal share, and at most `max_pids` tasks. Raises OSError when a wanted controller is missing
    or a limit cannot be set (the caller records the degradation)."""
    version, parents = cgroup_parents()
    want = {"memory": memory_bytes, "cpu": cpus, "pids": max_pids}
    missing = [c for c in controllers if want[c] is not None and c not in parents]
    if missing:
        raise OSError(f"cgroup controller(s) unavailable: {', '.join(missing)}")
    group = SlotCgroup(version, {})
    try:
        if version == "v2":
            parent = next(iter(parents.values()))
            _write(os.path.join(parent, "cgroup.subtree_control"),
                   " ".join(f"+{c}" for c in controllers if want[c] is not None))
        for c in controllers:
            if want[c] is None:
                continue
            d = os.path.join(parents[c], name)
            os.makedirs(d, exist_ok=True)
            group.dirs[c] = d
        period = 100_000
        if version == "v1":
            if memory_bytes is not None:
                m = group.dirs["memory"]
                _write(os.path.join(m, "memory.limit_in_bytes"), str(memory_bytes))
                if os.path.exists(os.path.join(m, "memory.memsw.limit_in_bytes")):
                    _write(os.path.join(m, "memory.memsw.limit_in_bytes"), str(memory_bytes))
            if cpus is not None:
                c = group.dirs["cpu"]
                _write(os.path.join(c, "cpu.shares"), "1024")
                _write(os.path.join(c, "cpu.cfs_period_us"), str(period))
                _write(os.path.join(c, "cpu.cfs_quota_us"), str(int(period * cpus)))
            if max_pids is not None:
                _write(os.path.join(group.dirs["pids"], "pids.max"), str(max_pids))
        else:
            d = next(iter(group.dirs.values()))
            if memory_bytes is not None:
                _write(os.path.join(d, "memory.max"), str(memory_bytes))
                if os.path.exists(os.path.join(d, "memory.swap.max")):
                    _write(os.path.join(d, "memory.swap.max"), "0")
            if cpus is not None:
                _write(os.path.join(d, "cpu.weight"), "100")
                _write(os.path.join(d, "cpu.max"), f"{int(period * cpus)} {period}")
            if max_pids is not None:
                _write(os.path.join(d, "pids.max"), str(max_pids))
    except OSError:
        group.remove()
        raise
    return group


def mount_proc_at(path: str) -> None:
    """A procfs on `path` whose processes of other uids are invisible to a non-root reader (hidepid=2):
    once the judge has dropped to the sandbox uid, host processes (and their argv) do not exist for it."""
    _check(_libc.mount(b"proc", path.encode(), b"proc", ctypes.c_ulong(MS_NOSUID | MS_NODEV | 0x8), b"hidepid=2"),
           f"mount proc on {path}")
