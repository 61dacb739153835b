"""The fork server (trusted): `python -m evaluation.sandbox CFG`, exec'd with an allow-listed environment.

It imports the Qiskit stack and the judge kinds once, probes what this host allows (each primitive in a throwaway
child), creates one memory/cpu/pids cgroup per worker slot, and forks one I (evaluation.sandbox.supervisor) per job.
It never runs reply code. JSON lines in (one job each), JSON lines out (id + the kind's result fields).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass

from evaluation.failures import JUDGE_ERROR
from evaluation.sandbox import channel
from evaluation.sandbox.kinds import JOB_KINDS, job_kind
from evaluation.sandbox.linux import cgroups, creds, landlock, namespaces, seccomp
from evaluation.sandbox.linux.libc import machine
from evaluation.sandbox.policy import (MiB, SANDBOX_UID_BASE, Isolation, SandboxLimits, readable_paths,
                                       root_plan)
from evaluation.sandbox.supervisor import _enter_minimal_root, sigkill, supervise


def probe_isolation(limits: SandboxLimits | None = None) -> Isolation:
    """Try each primitive in a throwaway child so the server itself stays unconfined."""
    limits = limits or SandboxLimits()
    iso = Isolation(root=os.geteuid() == 0)
    iso.landlock_abi = landlock.landlock_abi()
    tests = {"net_namespace": "net", "mount_namespace": "mnt", "pid_namespace": "pid", "ipc_namespace": "ipc",
             "tmpfs": "tmpfs",
             "minimal_root": "root", "seccomp": "seccomp"}
    for attr, what in tests.items():
        setattr(iso, attr, _probe(what))
    iso.uid_drop = _probe("uid_root" if iso.minimal_root else "uid")
    if iso.seccomp:
        iso.seccomp_arch = machine()
    iso.cgroup_version = cgroups.cgroup_parents()[0]
    if iso.root:
        budget = _memory_budget(limits)
        for ctrl, attr in (("pids", "pids_cgroup"), ("memory", "memory_cgroup"), ("cpu", "cpu_cgroup")):
            try:
                _slot_cgroup(f"qm-probe-{os.getpid()}", limits, (ctrl,), budget).remove()
                setattr(iso, attr, True)
            except OSError as exc:
                iso.warnings.append(f"no {ctrl} cgroup ({iso.cgroup_version or 'no cgroup hierarchy'}): {exc}")
        if iso.memory_cgroup:
            iso.memory_limit_bytes = budget
    if not iso.root:
        iso.warnings.append("not root: no per-reply uid or cgroup; RLIMIT_NPROC binds the calling uid")
    elif not iso.uid_drop and not iso.pids_cgroup:
        iso.warnings.append("root, but neither a per-reply uid (interpreter unreadable) nor a pids cgroup: "
                            "a fork storm is bounded only by the wall-clock kill")
    elif not iso.uid_drop:
        iso.warnings.append("root, but the sandbox uid cannot import the interpreter: replies run as uid 0 "
                            "without capabilities")
    if iso.root and not iso.memory_cgroup:
        iso.warnings.append("no memory cgroup: a reply's processes are each capped by RLIMIT_AS, not together "
                            "(memfd/shmem pages are not counted)")
    if iso.root and not iso.cpu_cgroup:
        iso.warnings.append("no cpu cgroup: one slot's processes can slow the other slot's reply down")
    if not iso.net_namespace:
        iso.warnings.append("unshare(CLONE_NEWNET) unavailable: no network namespace (Landlock TCP rules only)")
    if not iso.pid_namespace:
        iso.warnings.append("unshare(CLONE_NEWPID) unavailable: leftovers are killed by process group only")
    if not iso.ipc_namespace:
        iso.warnings.append("unshare(CLONE_NEWIPC) unavailable: SysV IPC objects are shared with the host")
    if not iso.mount_namespace or not iso.tmpfs:
        iso.warnings.append("no private tmpfs: the working directory is a plain temp dir (RLIMIT_FSIZE per file)")
    if iso.mount_namespace and iso.tmpfs and not iso.minimal_root:
        iso.warnings.append("no minimal root (pivot_root failed): the host's tree stays visible (reads limited by "
                            "Landlock; /tmp, /run, /dev/shm hidden); devices and pathname sockets elsewhere are not")
    if not iso.seccomp:
        iso.warnings.append(f"no seccomp filter ({machine()}): chmod/utime/xattr on visible host files "
                            "and unix/netlink/vsock sockets are not denied")
    if iso.landlock_abi < 1:
        iso.warnings.append("Landlock unavailable: writes outside the work dir are limited by the uid drop only")
    return iso


def _memory_budget(limits: SandboxLimits) -> int:
    """The slot's memory cap: the reply's budget plus one full copy of this (forked) interpreter, which
    copy-on-write faults may duplicate page by page."""
    with open("/proc/self/statm") as fh:
        rss = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return limits.memory_bytes + rss


def _slot_cgroup(name: str, limits: SandboxLimits, controllers: tuple[str, ...], budget: int) -> cgroups.SlotCgroup:
    return cgroups.create_slot_cgroup(
        name, memory_bytes=budget if "memory" in controllers else None,
        cpus=limits.cpus if "cpu" in controllers else None,
        max_pids=limits.nproc if "pids" in controllers else None, controllers=controllers)


def _probe(what: str) -> bool:
    probe_dir = tempfile.mkdtemp(prefix="qm-probedir-")
    try:
        return _probe_in(what, probe_dir)
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)


def _can_import_as_sandbox_uid() -> None:
    import sysconfig

    creds.drop_privileges(SANDBOX_UID_BASE)
    for key in ("stdlib", "platstdlib", "purelib"):  # can the interpreter still import?
        os.listdir(sysconfig.get_paths()[key])
    for path in readable_paths():  # and this package, the checkout and the import path
        if os.path.isdir(path):
            os.listdir(path)
    with open(__file__, "rb"):
        pass


def _probe_in(what: str, probe_dir: str) -> bool:
    pid = os.fork()
    if pid == 0:
        try:  # nothing may unwind out of this child: it would carry on as a second fork server
            os._exit(0 if _probe_step(what, probe_dir) else 1)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _probe_step(what: str, probe_dir: str) -> bool:
    """In a throwaway child: whether primitive `what` works here (any exception: it does not)."""
    if what == "net":
        namespaces.unshare(namespaces.CLONE_NEWNET)
    elif what == "mnt":
        namespaces.unshare(namespaces.CLONE_NEWNS)
        namespaces.make_mounts_private()
    elif what in ("pid", "ipc"):
        # what I does: children into a new namespace, then back into its own (so it can start threads again)
        flag, name = ((namespaces.CLONE_NEWPID, "pid") if what == "pid" else (namespaces.CLONE_NEWIPC, "ipc"))
        own = os.open(f"/proc/self/ns/{name}", os.O_RDONLY)
        namespaces.unshare(flag)
        child = os.fork()
        if child == 0:
            os._exit(0 if what == "ipc" or os.getpid() == 1 else 1)
        _, st = os.waitpid(child, 0)
        namespaces.setns(own, flag)
        worker = threading.Thread(target=lambda: None)
        worker.start()
        worker.join()
        return os.waitstatus_to_exitcode(st) == 0
    elif what == "tmpfs":
        namespaces.unshare(namespaces.CLONE_NEWNS)
        namespaces.make_mounts_private()
        namespaces.mount_tmpfs(probe_dir, 1 * MiB, 0)
    elif what in ("root", "uid_root"):
        namespaces.unshare(namespaces.CLONE_NEWNS)
        namespaces.make_mounts_private()
        _enter_minimal_root(probe_dir, SandboxLimits(tmpfs_bytes=1 * MiB), None)
        if not all(os.path.exists(p) for p in (sys.executable, __file__, "/dev/null", "/dev/urandom")):
            return False
        if what == "uid_root":
            _can_import_as_sandbox_uid()
    elif what == "uid":
        _can_import_as_sandbox_uid()
    elif what == "seccomp":
        seccomp.seccomp_restrict()
        try:
            os.chmod(probe_dir, 0o700)
            return False
        except PermissionError:
            pass
    return True


@dataclass
class _Running:
    job: dict
    pid: int
    fd: int
    workdir: str
    slot: int
    deadline: float
    buf: bytes = b""
    reply_pid: int | None = None


def serve(cfg: dict, inp=None, out=None) -> None:
    """JSON lines in (one job each: id, kind (default "circuit"), code, and the kind's own fields),
    JSON lines out (id + the kind's result fields)."""
    _remove_stale()  # first: a server stopped while it still imports or probes has done this much
    from evaluation.sandbox import preload

    preload.preload(cfg.get("preload_modules") or [])  # the Qiskit stack the jobs' code imports
    for kind in cfg.get("kinds") or list(JOB_KINDS):
        job_kind({"kind": kind}).preload()
    inp = inp or sys.stdin.buffer
    out = out or sys.stdout.buffer
    workers = max(1, int(cfg.get("workers") or 1))
    limits = SandboxLimits(**cfg["limits"])
    root_plan()  # path resolution done once here, inherited by every fork
    if machine() in seccomp.SYSCALLS:
        seccomp.seccomp_program(machine())
    iso = probe_isolation(limits)
    out.write((json.dumps({"ready": True, "isolation": asdict(iso)}) + "\n").encode())
    out.flush()
    base = tempfile.mkdtemp(prefix=f"qm-sandbox-{os.getpid()}-")
    os.chmod(base, 0o711)
    cgroups = {}
    running: dict[int, _Running] = {}
    try:
        wanted = tuple(c for c, ok in (("pids", iso.pids_cgroup), ("memory", iso.memory_cgroup),
                                       ("cpu", iso.cpu_cgroup)) if ok)
        if wanted:
            for slot in range(workers):  # a failure here is no per-reply degradation: the server stops
                cgroups[slot] = _slot_cgroup(f"qm-sandbox-{os.getpid()}-{slot}", limits, wanted,
                                             iso.memory_limit_bytes)
        _serve_loop(cfg, iso, inp, out, workers, limits, base, cgroups, running)
    finally:
        for r in running.values():  # stopped early (SIGTERM, broken pipe): nothing may outlive us
            sigkill(*([r.reply_pid] if r.reply_pid else []), -r.pid)
            try:
                os.waitpid(r.pid, 0)
            except ChildProcessError:
                pass
        shutil.rmtree(base, ignore_errors=True)
        for group in cgroups.values():
            group.kill_all()  # whatever a reply left that the kills above did not reach
            group.remove()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale() -> None:
    """Work dirs and cgroups left by fork servers that were SIGKILLed."""
    import re

    pattern = re.compile(r"^qm-sandbox-(\d+)-|^qm-probe-(\d+)$")
    cgroup_dirs = sorted(set(cgroups.cgroup_parents()[1].values()))
    for root, remove in ((tempfile.gettempdir(), lambda p: shutil.rmtree(p, ignore_errors=True)),
                         *((d, cgroups.remove_cgroup) for d in cgroup_dirs)):
        try:
            names = os.listdir(root)
        except OSError:
            continue
        for name in names:
            m = pattern.match(name)
            if m and not _pid_alive(int(m.group(1) or m.group(2))):
                remove(os.path.join(root, name))


def _serve_loop(cfg: dict, iso: Isolation, inp, out, workers: int, limits: SandboxLimits, base: str,
                cgroups: dict, running: dict) -> None:
    pending: list[dict] = []
    free_slots = list(range(workers))
    eof = False
    in_fd = inp.fileno()
    in_buf = b""
    while not eof or pending or running:
        while pending and free_slots:
            job = pending.pop(0)
            slot = free_slots.pop(0)
            running_job = _start(job, dict(cfg, _cgroup=cgroups.get(slot)), iso, base, slot, limits)
            running[running_job.fd] = running_job
        fds = list(running) + ([] if eof else [in_fd])
        timeout = max(0.0, min((r.deadline for r in running.values()), default=time.monotonic() + 1) - time.monotonic())
        ready, _, _ = select.select(fds, [], [], min(timeout, 1.0))
        for fd in ready:
            if fd == in_fd:
                chunk = os.read(in_fd, 1 << 20)
                if not chunk:
                    eof = True
                    continue
                in_buf += chunk
                while b"\n" in in_buf:
                    raw, in_buf = in_buf.split(b"\n", 1)
                    if raw.strip():
                        pending.append(json.loads(raw))
                continue
            r = running[fd]
            chunk = os.read(fd, 1 << 16)
            r.buf += chunk
            if r.reply_pid is None and b"\n" in r.buf:
                first, rest = r.buf.split(b"\n", 1)
                if first.startswith(b"G "):
                    r.reply_pid = int(first[2:])
                    r.buf = rest
            if not chunk or len(r.buf) > 4 * MiB:
                _finish(r, out, "judge output too large" if chunk else None)
                free_slots.append(r.slot)
                del running[fd]
        now = time.monotonic()
        for fd, r in list(running.items()):
            if now > r.deadline:
                _finish(r, out, f"judge timed out after {limits.timeout_s + limits.judge_timeout_s:g} s")
                free_slots.append(r.slot)
                del running[fd]


def _start(job: dict, cfg: dict, iso: Isolation, base: str, slot: int, limits: SandboxLimits) -> _Running:
    workdir = tempfile.mkdtemp(prefix=f"r{slot}-", dir=base)
    uid = SANDBOX_UID_BASE + slot if iso.uid_drop else None
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            devnull = os.open("/dev/null", os.O_RDWR)
            os.dup2(devnull, 0)
            os.dup2(devnull, 1)
            os.closerange(3, w)
            os.closerange(w + 1, 1 << 16)
            supervise(job, cfg, iso, workdir, uid, w)
        finally:
            os._exit(1)
    os.close(w)
    return _Running(job=job, pid=pid, fd=r, workdir=workdir, slot=slot,
                    deadline=time.monotonic() + limits.timeout_s + limits.judge_timeout_s + 5)


def _finish(r: _Running, out, forced_error: str | None) -> None:
    if forced_error is not None:
        sigkill(*([r.reply_pid] if r.reply_pid else []), -r.pid, r.pid)
    os.close(r.fd)
    try:
        os.waitpid(r.pid, 0)
    except ChildProcessError:
        pass
    shutil.rmtree(r.workdir, ignore_errors=True)
    lines = [x for x in r.buf.split(b"\n")[:-1] if x.strip()]  # complete lines only (written by I: trusted)
    last = channel.parse_object(lines[-1]) if lines else None
    partial = last if last is not None and last.get("partial") else None
    result = None
    if not forced_error:
        result = last if last is not None and not partial else None
        if result is None:
            forced_error = "judge process died without a result"
    if forced_error:  # a partial line (the judge's verdicts before it stopped) is kept by the kind
        result = job_kind(r.job).failed_run(r.job, forced_error, JUDGE_ERROR, **({"partial": partial} if partial else {}))
    result["id"] = r.job["id"]
    out.write(channel.dumps_line(result))
    out.flush()


def main() -> None:
    cfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {"limits": {}}
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop us (stdin EOF)

    def _term(signum, frame):  # noqa: ARG001
        raise SystemExit(1)  # unwinds through serve()'s cleanup

    signal.signal(signal.SIGTERM, _term)
    serve(cfg)
