"""Namespaces and mounts: unshare/setns, private mounts, tmpfs, procfs, binds and the minimal root (pivot_root)."""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from evaluation.sandbox.linux.libc import check, libc, machine

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND = 0x1, 0x2, 0x4, 0x20, 0x1000
MS_REC, MS_PRIVATE = 0x4000, 0x40000
_MS_NOEXEC = 0x8


def unshare(flags: int) -> None:
    check(libc.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def setns(fd: int, nstype: int) -> None:
    """Join the namespace `fd` (an open /proc/<pid>/ns/* file) refers to."""
    check(libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), f"setns({nstype:#x})")


def make_mounts_private() -> None:
    check(libc.mount(b"none", b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None), "mount --make-rprivate /")


def mount_tmpfs(path: str, size_bytes: int, uid: int, mode: str = "0700") -> None:
    opts = f"size={size_bytes},mode={mode},uid={uid},gid={uid}".encode()
    check(libc.mount(b"tmpfs", path.encode(), b"tmpfs", ctypes.c_ulong(MS_NOSUID | MS_NODEV), opts),
           f"mount tmpfs on {path}")


def bind_readonly(fd: int, target: str) -> None:
    """Bind what `fd` (an O_PATH handle opened before `target` was covered by another mount) points
    at onto `target`, read-only. This is how a venv under /tmp stays importable once /tmp is hidden."""
    src = f"/proc/self/fd/{fd}".encode()
    check(libc.mount(src, target.encode(), None, ctypes.c_ulong(MS_BIND | MS_REC), None), f"bind {target}")
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
    check(libc.mount(None, target.encode(), None, ctypes.c_ulong(flags), None), f"remount {target} read-only")


def mount_proc() -> None:
    """A procfs of the caller's own PID namespace over /proc: host processes (and their environ and
    cmdline, which may carry API keys) disappear from view. Needs a private mount namespace."""
    check(libc.mount(b"proc", b"/proc", b"proc", ctypes.c_ulong(MS_NOSUID | MS_NODEV | _MS_NOEXEC), None), "mount proc")


def mount_proc_at(path: str) -> None:
    """A procfs on `path` whose processes of other uids are invisible to a non-root reader (hidepid=2):
    once the judge has dropped to the sandbox uid, host processes (and their argv) do not exist for it."""
    check(libc.mount(b"proc", path.encode(), b"proc", ctypes.c_ulong(MS_NOSUID | MS_NODEV | _MS_NOEXEC), b"hidepid=2"),
           f"mount proc on {path}")



# ------------------------------------------------------------------------------ minimal filesystem view

MNT_DETACH = 0x2
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}


def bind(source: str, target: str, *, readonly: bool = True, rec: bool = True, nodev: bool = True) -> None:
    """Bind `source` (a path of the current view) onto `target`; read-only, nosuid (and nodev) by default."""
    check(libc.mount(source.encode(), target.encode(), None, ctypes.c_ulong(MS_BIND | (MS_REC if rec else 0)), None),
           f"bind {source} on {target}")
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | (MS_RDONLY if readonly else 0) | (MS_NODEV if nodev else 0)
    check(libc.mount(None, target.encode(), None, ctypes.c_ulong(flags), None), f"remount {target}")


def remount_readonly(target: str) -> None:
    flags = MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
    check(libc.mount(None, target.encode(), None, ctypes.c_ulong(flags), None), f"remount {target} read-only")


def pivot_root(new_root: str) -> None:
    """Make `new_root` (a mount point) the root of this mount namespace and detach the old root:
    nothing of the host's tree that was not bound into `new_root` stays reachable."""
    nr = _SYS_PIVOT_ROOT.get(machine())
    if nr is None:
        raise OSError(f"pivot_root: unknown syscall number on {machine()}")
    os.chdir(new_root)
    check(libc.syscall(ctypes.c_long(nr), b".", b"."), "pivot_root")
    check(libc.umount2(b".", ctypes.c_int(MNT_DETACH)), "umount the old root")
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
