"""A seccomp-BPF filter (classic BPF, built here per architecture).

Why not libseccomp: the Python bindings on the registries here (pyseccomp 0.1.2, 2021, a ctypes wrapper) drive
the system's libseccomp 2.5.4, whose syscall tables predate fchmodat2 (Linux 6.6) and setxattrat/removexattrat
(6.13), all three of which the filter must deny; the table below names each number with its source.
"""

from __future__ import annotations

import ctypes
import functools
import struct

from evaluation.sandbox.linux.libc import PR_SET_NO_NEW_PRIVS, check, libc, machine, prctl

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
    check(libc.prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER),
                       ctypes.cast(ctypes.pointer(prog), ctypes.c_void_p), ctypes.c_ulong(0), ctypes.c_ulong(0)),
           "seccomp filter")
    return arch
