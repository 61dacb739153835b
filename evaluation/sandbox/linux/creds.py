"""Credentials and limits: capabilities, the uid drop, rlimits."""

from __future__ import annotations

import ctypes
import os
import resource

from evaluation.sandbox.linux.libc import PR_SET_DUMPABLE, check, libc, machine, prctl

_PR_CAPBSET_DROP, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4
_SYS_CAPSET = {"x86_64": 126, "aarch64": 91}
_CAP_V3 = 0x20080522


def drop_capabilities() -> None:
    """Empty every capability set, the bounding set included, so that even uid 0 (and anything it
    execs) cannot mount, load modules, trace, use raw sockets or override file permissions."""
    drop_bounding_set()
    header = (ctypes.c_uint32 * 2)(_CAP_V3, 0)
    data = (ctypes.c_uint32 * 6)()
    nr = _SYS_CAPSET.get(machine())
    if nr is None:
        raise OSError(f"capset: unknown syscall number on {machine()}")
    check(libc.syscall(ctypes.c_long(nr), header, data), "capset")


def drop_bounding_set() -> None:
    """Empty the bounding and ambient sets (needs CAP_SETPCAP: call it before dropping to another uid,
    which then clears the permitted and effective sets)."""
    for cap in range(64):
        if libc.prctl(ctypes.c_int(_PR_CAPBSET_DROP), ctypes.c_ulong(cap), ctypes.c_ulong(0), ctypes.c_ulong(0),
                       ctypes.c_ulong(0)) != 0:
            if ctypes.get_errno() == 22:  # EINVAL: past the last capability this kernel knows
                break
            check(-1, f"PR_CAPBSET_DROP {cap}")
    libc.prctl(ctypes.c_int(_PR_CAP_AMBIENT), ctypes.c_ulong(_PR_CAP_AMBIENT_CLEAR_ALL), ctypes.c_ulong(0),
                ctypes.c_ulong(0), ctypes.c_ulong(0))


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
