"""I, the supervisor and judge (trusted): one per reply, forked by the fork server.

I enters the isolation (network, mount, IPC and PID namespaces, the minimal root), forks G (evaluation.sandbox.reply),
and decides the verdict from what it observes itself: G's end (its exit status, or the deadline I enforced),
the records G handed over, whose framing it checks (exactly the records its kind sends, each one JSON object,
size- and depth-capped) and whose content the kind's judge verifies (the circuit judge parses the QPY; the
HumanEval judge decodes values into genuine objects and runs the task's test itself). Records are read only from
a G that ended with status 0 before the deadline: a record written before a hang or a crash is never a verdict.
Before parsing anything I drops to the sandbox uid under Landlock, rlimits and seccomp itself.
"""

from __future__ import annotations

import os
import select
import signal
import time
from typing import Any

from evaluation.failures import JUDGE_ERROR
from evaluation.sandbox import channel
from evaluation.sandbox.kinds import interactive, job_kind, short_exc
from evaluation.sandbox.linux import cgroups, creds, landlock, namespaces, seccomp
from evaluation.sandbox.linux.libc import PR_SET_PDEATHSIG, prctl
from evaluation.sandbox.policy import (HIDDEN_DIRS, MiB, Isolation, IsolationError, SandboxLimits, fault_of,
                                       readable_paths, readable_under, root_plan, step)
from evaluation.sandbox.reply import run_reply

# The reply's own failures (evaluation.failures); TOO_COMPLEX: the judge's budget spent on what the reply built.
TIMEOUT, RESOURCE_LIMIT, RUNTIME_ERROR, TOO_COMPLEX = "timeout", "resource_limit", "runtime_error", "too_complex"


def sigkill(*targets: int) -> None:
    """os.kill(target, SIGKILL) for each target in order (a pid, or -pgid for a whole process group);
    a target that is already gone (ProcessLookupError) or not ours (PermissionError) is skipped."""
    for target in targets:
        try:
            os.kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _kill_reply(pid: int, pid_ns: bool) -> None:
    sigkill(*([pid] if pid_ns else [pid, -pid]))


def _read_setup(fd: int, deadline: float) -> str:
    """G's setup report: "ok", or the isolation step that failed (G then exits without running the reply)."""
    data = b""
    while len(data) < 1000:
        left = deadline - time.monotonic()
        if left <= 0:
            return "isolation setup timed out"
        r, _, _ = select.select([fd], [], [], left)
        if r:
            chunk = os.read(fd, 1000)
            if not chunk:
                break
            data += chunk
    text = data.decode("utf-8", "replace")
    return text if text else "reply process died during isolation setup"


def _memory_peak(fd: int | None) -> int | None:
    if fd is None:
        return None
    try:
        return int(os.pread(fd, 64, 0).split()[0])
    except (OSError, ValueError, IndexError):
        return None


class _Watch:
    """G's end, observed by I: a pidfd (or, where there is none, polling) and the one waitpid."""

    def __init__(self, pid: int):
        self.pid = pid
        self.status: int | None = None
        try:
            self.fd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.fd = None

    def poll(self) -> bool:
        if self.status is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.status = status
        return self.status is not None

    def wait(self) -> int:
        if self.status is None:
            self.status = os.waitpid(self.pid, 0)[1]
        return self.status

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _drain(fd: int, buf: bytearray, cap: int) -> bool:
    """Read what is left in the pipe without blocking; False when more than `cap` bytes arrived."""
    os.set_blocking(fd, False)
    try:
        while len(buf) <= cap:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            buf += chunk
    except BlockingIOError:
        pass
    return len(buf) <= cap


def _collect_until_end(watch: _Watch, fd: int, deadline: float, cap: int) -> tuple[bytes, str | None]:
    """Everything G writes on `fd` until G ends: (bytes, None), or (b"", "timeout" / "too_large") when G
    did not end before `deadline` or wrote more than `cap` bytes (G is then still running: the caller kills it)."""
    buf = bytearray()
    fds = [fd] + ([watch.fd] if watch.fd is not None else [])
    while True:
        if watch.poll():
            return (bytes(buf), None) if _drain(fd, buf, cap) else (b"", "too_large")
        left = deadline - time.monotonic()
        if left <= 0:
            return b"", "timeout"
        ready, _, _ = select.select(fds, [], [], left if watch.fd is not None else min(left, 0.05))
        if fd in ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                fds.remove(fd)  # G (or all that inherited the pipe) closed it; its end follows
            buf += chunk
            if len(buf) > cap:
                return b"", "too_large"


def _no_records(problem: str | None, wstatus: int | None, limits: SandboxLimits) -> dict:
    """Why there is nothing to judge: the deadline, the cap, or how G ended (all the reply's doing)."""
    if problem == "timeout":
        return {"error": f"timed out after {limits.timeout_s:g} s", "failure": TIMEOUT}
    if problem == "too_large":
        return {"error": f"result larger than {limits.result_bytes} bytes", "failure": RESOURCE_LIMIT}
    killed = (wstatus is not None and os.WIFSIGNALED(wstatus)
              and os.WTERMSIG(wstatus) in (signal.SIGKILL, signal.SIGXCPU, signal.SIGXFSZ))
    return {"error": f"reply process died without a result ({_describe_exit(wstatus)})",
            "failure": RESOURCE_LIMIT if killed else RUNTIME_ERROR}


MALFORMED = {"error": "malformed result from the reply process", "failure": RUNTIME_ERROR}


def parse_records(data: bytes, wstatus: int, most: int) -> list[dict] | dict:
    """The records of a G that ended: 1..`most` complete JSON-object lines, and only from G's own exit path
    (status 0). Otherwise the error dict (died, or malformed: extra, partial or unparsable records)."""
    if not (os.WIFEXITED(wstatus) and os.WEXITSTATUS(wstatus) == 0) or not data:
        return _no_records(None, wstatus, SandboxLimits())
    lines = data.split(b"\n")
    if lines[-1] != b"" or not 1 <= len(lines) - 1 <= most:
        return dict(MALFORMED)
    records = [channel.parse_object(line) for line in lines[:-1]]
    if any(r is None or "error" in r or "failure" in r for r in records[:1]) or any(r is None for r in records):
        return dict(MALFORMED)
    return records


def _describe_exit(wstatus: int | None) -> str:
    if wstatus is None:
        return "still running"
    if os.WIFSIGNALED(wstatus):
        sig = os.WTERMSIG(wstatus)
        return f"killed by {signal.Signals(sig).name}" if sig in signal.Signals._value2member_map_ else f"signal {sig}"
    return f"exit status {os.WEXITSTATUS(wstatus)}"


def supervise(job: dict, cfg: dict, iso: Isolation, workdir: str, uid: int | None, out_fd: int) -> None:
    """Runs in I. Writes `G <pid>` then one JSON result line to out_fd. Never returns."""
    limits = SandboxLimits(**cfg["limits"])
    t0 = time.monotonic()
    deadline = t0 + limits.timeout_s
    result: dict[str, Any] = {"id": job["id"]}
    fault = fault_of(job)
    kind = job_kind(job)
    pid = None
    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        os.setsid()
        memory_procs_fd, peak_fd = _join_cgroups(cfg.get("_cgroup"), fault)
        if iso.net_namespace:
            step("net_namespace", fault, namespaces.unshare, namespaces.CLONE_NEWNET)
        base_vm = creds.current_vm_size()
        # I's own PID and IPC namespaces, re-entered once G is forked into new ones: G's SysV IPC objects die
        # with G's namespace, and I can start threads again (qiskit's Rust pool; a process whose children go
        # to another PID namespace cannot create threads)
        own_ns = {flag: os.open(f"/proc/self/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
                  for flag, name, on in ((namespaces.CLONE_NEWPID, "pid", iso.pid_namespace),
                                         (namespaces.CLONE_NEWIPC, "ipc", iso.ipc_namespace)) if on}
        if iso.mount_namespace:
            step("mount_namespace", fault, namespaces.unshare, namespaces.CLONE_NEWNS)
            step("mount_namespace", fault, namespaces.make_mounts_private)
            if iso.minimal_root:
                step("minimal_root", fault, _enter_minimal_root, workdir, limits, uid)
            elif iso.tmpfs:
                step("tmpfs", fault, _hide_shared_dirs, workdir, limits, uid)
        if iso.ipc_namespace:
            step("ipc_namespace", fault, namespaces.unshare, namespaces.CLONE_NEWIPC)
        if iso.pid_namespace:
            step("pid_namespace", fault, namespaces.unshare, namespaces.CLONE_NEWPID)
        pid_ns = iso.pid_namespace
        if uid is not None:
            os.chown(workdir, uid, uid)
        files = []
        for name in ("stdout.txt", "stderr.txt"):
            fd = os.open(os.path.join(workdir, name), os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            if uid is not None:
                os.fchown(fd, uid, uid)
            files.append(fd)
        r, w = os.pipe()
        sr, sw = os.pipe()
        cr, cw = os.pipe() if interactive(kind) else (None, None)
        pid = os.fork()
        if pid == 0:
            for fd in (r, sr, cw, *own_ns.values()):
                if fd is not None:
                    os.close(fd)
            fds = {"result": w, "setup": sw, "stdout": files[0], "stderr": files[1]}
            if cr is not None:
                fds["calls"] = cr
            run_reply(reply_job(job, kind), iso, workdir, uid, limits, fds, base_vm, pid_ns and iso.mount_namespace,
                      memory_procs_fd, fault, deadline)
        for fd in (w, sw, cr, memory_procs_fd):
            if fd is not None:
                os.close(fd)
        for flag, fd in own_ns.items():
            step("pid_namespace" if flag == namespaces.CLONE_NEWPID else "ipc_namespace", fault,
                 namespaces.setns, fd, flag)
            os.close(fd)
        os.write(out_fd, f"G {pid}\n".encode())
        watch = _Watch(pid)
        setup = _read_setup(sr, deadline)
        os.close(sr)
        if interactive(kind):
            _judge_interactive(job, cfg, kind, watch, r, cw, setup, deadline, limits, uid, iso, fault, result,
                               out_fd, files, peak_fd, t0, pid_ns)
        else:
            _judge_records(job, cfg, kind, watch, r, setup, deadline, limits, uid, iso, fault, result, out_fd,
                           files, peak_fd, t0, pid_ns)
    except IsolationError as exc:
        # fail closed: the reply did not run (or the judge would have run less isolated than logged)
        if pid:
            sigkill(pid)
        result.update(kind.failed_run(job, f"isolation failed: {exc}"[:300], JUDGE_ERROR))
    except BaseException as exc:  # noqa: BLE001
        if pid:
            sigkill(pid)
        result.update(kind.failed_run(job, "sandbox failure: " + short_exc(exc), JUDGE_ERROR))
    channel.write_all(out_fd, channel.dumps_line(result))
    os._exit(0)


def reply_job(job: dict, kind) -> dict:
    """What G is given of the job: never the fields its kind keeps from the reply (a HumanEval task's test)."""
    hidden = getattr(kind, "HIDDEN_FROM_REPLY", ())
    return {k: v for k, v in job.items() if k not in hidden}


def _join_cgroups(cg: cgroups.SlotCgroup | None, fault: str | None) -> tuple[int | None, int | None]:
    """I (and so G) joins the slot's pids and cpu groups; only G joins the memory group (the judge's own memory
    is bounded by its rlimit), through a handle opened here, before the host's /sys disappears from view."""
    memory_procs_fd = peak_fd = None
    if cg is None:
        return None, None
    for ctrl in ("pids", "cpu"):
        if ctrl in cg.dirs:
            step(f"{ctrl}_cgroup", fault, cgroups.join_cgroup, cg.dirs[ctrl])
    if "memory" in cg.dirs:
        memory_procs_fd = step("memory_cgroup", fault, os.open, cg.procs("memory"), os.O_WRONLY)
        peak_fd = step("memory_cgroup", fault, os.open, cg.peak_file(), os.O_RDWR)
        if cg.version == "v1":
            os.pwrite(peak_fd, b"0", 0)  # this slot's peak restarts with this job
    return memory_procs_fd, peak_fd


def _finish_reply(watch: _Watch, pid_ns: bool, result: dict, files: list[int], peak_fd: int | None, t0: float,
                  limits: SandboxLimits) -> int:
    """G (and all it left) killed and reaped; run figures into `result`. Returns G's wait status."""
    _kill_reply(watch.pid, pid_ns)
    wstatus = watch.wait()
    watch.close()
    result["exec_seconds"] = round(time.monotonic() - t0, 3)
    result["stdout_tail"] = channel.tail(files[0], limits.output_tail_bytes)
    result["stderr_tail"] = channel.tail(files[1], limits.output_tail_bytes)
    peak = _memory_peak(peak_fd)
    if peak is not None:
        result["memory_peak_bytes"] = peak
    return wstatus


def _lock_down(uid: int | None, iso: Isolation, limits: SandboxLimits, fault: str | None) -> None:
    """From here on I handles only untrusted bytes: it confines itself as it confined G."""
    if uid is not None:
        step("judge_capabilities", fault, creds.drop_bounding_set)
        step("judge_uid_drop", fault, creds.drop_privileges, uid)
        step("judge_uid_drop", fault, prctl, PR_SET_PDEATHSIG, signal.SIGKILL)
    if iso.landlock_abi >= 1:
        step("judge_landlock", fault, landlock.landlock_restrict, [], readable=readable_paths())
    creds.set_limits(address_space=creds.current_vm_size() + 2 * limits.memory_bytes,
                     cpu_s=int(limits.judge_timeout_s), fsize=0, nofile=None, nproc=None)
    if os.geteuid() == 0:
        step("judge_capabilities", fault, creds.drop_capabilities)
    if iso.seccomp:
        step("judge_seccomp", fault, seccomp.seccomp_restrict)


def _judge_records(job, cfg, kind, watch, r, setup, deadline, limits, uid, iso, fault, result, out_fd, files, peak_fd,
                   t0, pid_ns) -> None:
    """Collect-and-judge kinds (the circuit judge): G's records, read once G has ended, then the kind's judge."""
    data, problem = (_collect_until_end(watch, r, deadline, limits.result_bytes) if setup == "ok"
                     else (b"", None))
    wstatus = _finish_reply(watch, pid_ns, result, files, peak_fd, t0, limits)
    if setup != "ok":
        raise IsolationError(setup)
    _lock_down(uid, iso, limits, fault)
    has_more = hasattr(kind, "collect_more")
    records = _no_records(problem, wstatus, limits) if problem else parse_records(data, wstatus, 2 if has_more else 1)
    if isinstance(records, dict):
        result.update(kind.failed_run(job, records["error"], records["failure"]))
        return
    header = records[0]
    if has_more:
        header = kind.merge_more(header, records[1] if len(records) > 1 else {"error": "no second record"})
    # what the judge has decided so far, as a line the server keeps if the judge dies or times out
    emit = lambda part: channel.write_all(out_fd, channel.dumps_line({**result, **part, "partial": True}))  # noqa: E731
    result.update(kind.judge(job, dict(cfg, _emit_partial=emit), header, limits))


def _judge_interactive(job, cfg, kind, watch, r, cw, setup, deadline, limits, uid, iso, fault, result, out_fd, files,
                       peak_fd, t0, pid_ns) -> None:
    """Calling kinds (HumanEval): G reports that the candidate's code ran, then answers the calls of the task's
    test, which runs here, in I, locked down; the verdict is the test's."""
    if setup != "ok":
        _finish_reply(watch, pid_ns, result, files, peak_fd, t0, limits)
        raise IsolationError(setup)
    line, problem, pending = channel.read_line(r, deadline, limits.result_bytes)
    ready = channel.parse_object(line) if line is not None else None
    _lock_down(uid, iso, limits, fault)
    if ready is None or "error" in ready or "failure" in ready:
        if line is None and problem == "eof":
            problem = None
        wstatus = _finish_reply(watch, pid_ns, result, files, peak_fd, t0, limits)
        err = _no_records(problem, wstatus, limits) if line is None else dict(MALFORMED)
        result.update(kind.failed_run(job, err["error"], err["failure"]))
        return
    buffered = [pending]

    def call(request: bytes) -> bytes | None:
        """One request to G, one response line back before the deadline (None: G gone, late, or too large)."""
        try:
            channel.write_all(cw, request if request.endswith(b"\n") else request + b"\n")
        except OSError:
            return None
        response, _, rest = channel.read_line(r, deadline, limits.result_bytes, buffered[0])
        buffered[0] = rest
        return response

    try:
        result.update(kind.judge_calls(job, ready, call, deadline))
    finally:
        os.close(cw)
        _finish_reply(watch, pid_ns, result, files, peak_fd, t0, limits)


def _enter_minimal_root(workdir: str, limits: SandboxLimits, uid: int | None) -> None:
    """Make a tmpfs on `workdir` (a fresh, empty host directory) the root of I's mount namespace, with
    the read-only paths, a reduced /dev, a procfs and, at the same path as on the host, the reply's
    size-capped working directory. Host sockets, devices, home and scratch directories do not exist
    in it, and every directory on the way to the interpreter is traversable by the sandbox uid."""
    namespaces.build_root(workdir, root_plan())
    inner = workdir.rstrip("/") + workdir
    os.makedirs(inner, mode=0o755, exist_ok=True)
    namespaces.mount_tmpfs(inner, limits.tmpfs_bytes, uid if uid is not None else 0)
    proc = workdir.rstrip("/") + "/proc"
    namespaces.mount_proc_at(proc)
    namespaces.pivot_root(workdir)
    namespaces.remount_readonly("/")


def _hide_shared_dirs(workdir: str, limits: SandboxLimits, uid: int | None) -> None:
    """Without a minimal root: empty tmpfs over the shared scratch places (and the unix sockets other
    programs keep there), except the Python installation and this package when they live there (a
    venv or a checkout under /tmp): those come back read-only."""
    keep = [(p, os.open(p, os.O_PATH)) for p in readable_under(HIDDEN_DIRS)]
    for shared in HIDDEN_DIRS:
        if os.path.isdir(shared) and not os.path.islink(shared):
            namespaces.mount_tmpfs(shared, 1 * MiB, 0, mode="0755")
    for path, fd in keep:
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.makedirs(path, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "a").close()
        namespaces.bind_readonly(fd, path)
        os.close(fd)
    os.makedirs(workdir, exist_ok=True)
    namespaces.mount_tmpfs(workdir, limits.tmpfs_bytes, uid if uid is not None else 0)
