"""cgroups (v1 or v2): one memory/cpu/pids group per worker slot."""

from __future__ import annotations

import os
from dataclasses import dataclass

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



def join_cgroup(path: str) -> None:
    with open(os.path.join(path, "cgroup.procs"), "w") as fh:
        fh.write(str(os.getpid()))


def remove_cgroup(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass
