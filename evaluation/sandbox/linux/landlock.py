"""Landlock: unprivileged filesystem (and, by ABI, TCP and scope) restrictions a process puts on itself."""

from __future__ import annotations

import ctypes
import os
import struct

from evaluation.sandbox.linux.libc import PR_SET_NO_NEW_PRIVS, check, libc, prctl

_SYS_LANDLOCK_CREATE_RULESET, _SYS_LANDLOCK_ADD_RULE, _SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446  # all arches
_SYS_LANDLOCK_CREATE_RULESET, _SYS_LANDLOCK_ADD_RULE, _SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1
# Filesystem rights that change something (reads and execution stay allowed everywhere).
_FS_WRITE_FILE, _FS_TRUNCATE, _FS_IOCTL_DEV = 1 << 1, 1 << 14, 1 << 15
_FS_WRITE_V1 = (1 << 1) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12)
_FS_REFER = 1 << 13
_NET_ALL = (1 << 0) | (1 << 1)           # bind / connect TCP (ABI >= 4)
_SCOPE_ALL = (1 << 0) | (1 << 1)         # abstract unix sockets / signals (ABI >= 6)


def landlock_abi() -> int:
    """0 when Landlock is unavailable."""
    ret = libc.syscall(ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0),
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
    fd = check(libc.syscall(ctypes.c_long(_SYS_LANDLOCK_CREATE_RULESET), buf, ctypes.c_size_t(size),
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
                check(libc.syscall(ctypes.c_long(_SYS_LANDLOCK_ADD_RULE), ctypes.c_int(fd),
                                     ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH), rule, ctypes.c_uint32(0)),
                       f"landlock_add_rule {path}")
            finally:
                os.close(pfd)
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        check(libc.syscall(ctypes.c_long(_SYS_LANDLOCK_RESTRICT_SELF), ctypes.c_int(fd), ctypes.c_uint32(0)),
               "landlock_restrict_self")
    finally:
        os.close(fd)
