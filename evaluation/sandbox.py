"""Run model-written code in isolation: the one runner behind every judge (threat model: docs/sandbox.md).

A job's kind names the module that judges it (JOB_KINDS: the circuit judge, evaluation.circuit_judge).
`run_jobs` starts the fork server and streams jobs through it. Process layout (one fork server per
scoring session):

  parent (CLI / library; may hold API keys)
    └─ fork server: `python -m evaluation.sandbox` exec'd with a scrubbed environment; imports qiskit
       once; never runs reply code.                                    [trusted]
         └─ I, the supervisor/judge, forked per reply: new session; unshares mount, network and PID
            namespaces; mounts a size-capped tmpfs as the reply's working directory.   [trusted]
              └─ G, PID 1 of the new PID namespace: drops to a per-slot uid, Landlock (writes only
                 in its directory, no TCP), rlimits (AS, CPU, FSIZE, NOFILE, NPROC, CORE), empty
                 environment, stdout/stderr to files in its directory; execs the reply; the job's
                 kind collects what its judge needs (the circuit judge: the QuantumCircuit as QPY)
                 and sends it back in one JSON line, size-capped.
                                                                       [hostile]
  I reads G's line with a wall-clock deadline, then SIGKILLs G (PID-namespace init: the kernel kills
  every process G left behind), drops to the sandbox uid under Landlock and rlimits itself, and lets
  the job's kind judge G's line (the circuit judge parses the untrusted QPY, verifies the circuit and
  runs the barren-plateau check); the numbers go to the fork server as JSON. I never executes reply code,
  so a reply cannot tamper with the judge that measures it; the parent only ever parses capped JSON.
"""

from __future__ import annotations

import io
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

from evaluation import isolation
from evaluation.failures import JUDGE_ERROR

log = logging.getLogger(__name__)

SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH")
SANDBOX_UID_BASE = 61000
HIDDEN_DIRS = ("/tmp", "/var/tmp", "/run", "/dev/shm")
MiB = 1 << 20


@dataclass
class SandboxLimits:
    timeout_s: float = 20.0          # wall clock for the reply's code
    judge_timeout_s: float = 60.0   # wall clock for the judge (QPY load, verification, BP, VQE)
    memory_bytes: int = 1024 * MiB   # address space on top of the forked interpreter's own
    file_bytes: int = 16 * MiB       # RLIMIT_FSIZE: largest file (stdout/stderr included)
    tmpfs_bytes: int = 64 * MiB      # the whole working directory
    nofile: int = 64
    nproc: int = 64                  # processes + threads of the sandbox uid (binds: uid is not root)
    result_bytes: int = 8 * MiB      # the QPY line from the reply process
    output_tail_bytes: int = 2000    # stdout/stderr kept for the error message


@dataclass
class Isolation:
    """What this host allowed; anything False is a documented, logged degradation."""
    root: bool = False
    uid_drop: bool = False
    net_namespace: bool = False
    pid_namespace: bool = False
    mount_namespace: bool = False
    tmpfs: bool = False
    landlock_abi: int = 0
    pids_cgroup: bool = False
    warnings: list[str] = field(default_factory=list)


# A job's "kind" names the module that judges it. Each module provides
#   preload()                          imports done once in the fork server (inherited by every fork);
#   collect(namespace, job, header)    in G, after the code ran: adds what the judge needs to `header`
#                                      (JSON-able; header["exec_error"] holds the code's own exception);
#   judge(job, cfg, header, limits)    in I, locked down: the result fields, from the header alone;
#   failed_run(job, error, failure)    the result fields when there is no verdict from judge():
#                                      `failure` is the reply's own ("timeout", "resource_limit",
#                                      "runtime_error": evaluation.failures) or JUDGE_ERROR (the
#                                      runner or judge broke: no verdict on the reply, never a score).
JOB_KINDS = {"circuit": "evaluation.circuit_judge", "humaneval": "evaluation.humaneval.judge"}


def job_kind(job: dict):
    import importlib

    kind = job.get("kind", "circuit")
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    return importlib.import_module(JOB_KINDS[kind])


def scrubbed_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the fork server: no credentials of any kind, single-threaded numerics."""
    keep = {}
    for k, v in os.environ.items():
        ku = k.upper()
        if any(m in ku for m in SECRET_MARKERS) or ku.startswith(("OPENAI", "VLLM", "HF_", "AWS", "GH_", "GITHUB")):
            continue
        keep[k] = v
    keep.update({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                 "RAYON_NUM_THREADS": "1", "QISKIT_PARALLEL": "FALSE", "PYTHONDONTWRITEBYTECODE": "1",
                 # Rust-side qiskit stays single-threaded: a rayon pool does not survive fork()
                 # (a forked child waiting on it hangs on a futex forever).
                 "QISKIT_IN_PARALLEL": "TRUE"})
    keep.update(extra or {})
    return keep


_SYSTEM_READ = ("/usr", "/lib", "/lib64", "/bin", "/sbin", "/dev", "/proc", "/sys", "/etc/ld.so.cache",
                "/etc/localtime", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/ssl", "/etc/matplotlibrc",
                "/etc/os-release", "/etc/hosts", "/etc/resolv.conf", "/etc/mime.types")


def readable_paths() -> list[str]:
    """What reply code may read: the Python installation, its import path, system libraries.
    Not /root, /home, /work, /tmp, /etc/shadow, ... (where credentials live)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.abspath(__file__))}
    paths.update(p for p in sys.path if p and os.path.isabs(p))
    paths.update(_SYSTEM_READ)
    # never a whole tree like "/" (sys.path[0] of `python -m` is the working directory)
    return sorted(p for p in paths if os.path.exists(p)
                  and os.path.abspath(p) not in ("/", "/root", "/home", "/work", "/tmp", "/etc", "/var"))


def _readable_under(dirs: tuple[str, ...]) -> list[str]:
    """The readable paths that lie inside one of `dirs`, outermost only (binding those covers the rest)."""
    inside = sorted((p for p in readable_paths()
                     if any(os.path.commonpath([p, d]) == d for d in dirs if os.path.isdir(d))), key=len)
    outer: list[str] = []
    for p in inside:
        if not any(os.path.commonpath([p, o]) == o for o in outer):
            outer.append(p)
    return outer


# ------------------------------------------------------------------------------------------ reply (G)

def _reply_process(job: dict, workdir: str, uid: int | None, limits: SandboxLimits, result_fd: int,
                   out_fd: int, err_fd: int, base_vm: int, own_proc: bool) -> None:
    """Runs in G: executes the job's code, lets its kind collect what the judge needs, and writes that
    as one JSON line to result_fd. Never returns."""
    status = 1
    try:
        isolation.prctl(isolation.PR_SET_PDEATHSIG, signal.SIGKILL)
        if own_proc:
            isolation.unshare(isolation.CLONE_NEWNS)
            isolation.mount_proc()
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.closerange(3, result_fd)
        os.closerange(result_fd + 1, 1 << 16)
        if uid is not None:
            isolation.drop_privileges(uid)
        try:
            isolation.landlock_restrict([workdir], ["/dev/null"], readable=readable_paths())
        except OSError:
            pass  # recorded by the server's capability probe
        os.chdir(workdir)
        os.environ.clear()
        os.environ.update({"HOME": workdir, "TMPDIR": workdir, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
                           "MPLCONFIGDIR": workdir, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
                           "OPENBLAS_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1",
                           "QISKIT_IN_PARALLEL": "TRUE"})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write fails with EFBIG instead
        isolation.set_limits(address_space=base_vm + limits.memory_bytes, cpu_s=int(limits.timeout_s) + 1,
                             fsize=limits.file_bytes, nofile=limits.nofile,
                             nproc=limits.nproc if uid is not None else None)
        if os.geteuid() == 0:
            isolation.drop_capabilities()
        sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0), write_through=True)
        sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", buffering=0), write_through=True)
        sys.argv = ["reply.py"]
        header: dict[str, Any] = {"exec_error": None}
        namespace: dict[str, Any] = {"__name__": "__main__", "__file__": os.path.join(workdir, "reply.py")}
        try:
            exec(compile(job["code"], "reply.py", "exec", dont_inherit=True), namespace)
        except SystemExit as exc:
            header["exit"] = str(exc.code)[:200]
        except BaseException as exc:  # noqa: BLE001 - anything the reply raises is its own failure
            header["exec_error"] = short_exc(exc)
        job_kind(job).collect(namespace, job, header)
        _write_all(result_fd, (json.dumps(header) + "\n").encode())
        status = 0
    except BaseException:  # noqa: BLE001
        try:
            os.write(2, traceback.format_exc()[-1500:].encode())
        except OSError:
            pass
    finally:
        os._exit(status)


# ---------------------------------------------------------------------------------- supervisor (I)

def _read_line(fd: int, deadline: float, cap: int) -> tuple[bytes | None, str | None]:
    """One newline-terminated line from fd before `deadline`, at most `cap` bytes."""
    chunks, size = [], 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None, "timeout"
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            data = b"".join(chunks)
            return (data, None) if data.endswith(b"\n") else (None, "eof")
        chunks.append(chunk)
        size += len(chunk)
        if b"\n" in chunk:
            return b"".join(chunks).split(b"\n", 1)[0] + b"\n", None
        if size > cap:
            return None, "too_large"


def _tail(fd: int, cap: int) -> str:
    try:
        size = os.fstat(fd).st_size
        os.lseek(fd, max(0, size - cap), os.SEEK_SET)
        return os.read(fd, cap).decode("utf-8", "replace")
    except OSError:
        return ""


def _sigkill(*targets: int) -> None:
    """os.kill(target, SIGKILL) for each target in order (a pid, or -pgid for a whole process group);
    a target that is already gone (ProcessLookupError) or not ours (PermissionError) is skipped."""
    for target in targets:
        try:
            os.kill(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _kill_reply(pid: int, pid_ns: bool) -> None:
    _sigkill(*([pid] if pid_ns else [pid, -pid]))


def _supervise(job: dict, cfg: dict, iso: Isolation, workdir: str, uid: int | None, out_fd: int) -> None:
    """Runs in I. Writes `G <pid>` then one JSON result line to out_fd. Never returns."""
    limits = SandboxLimits(**cfg["limits"])
    t0 = time.monotonic()
    result: dict[str, Any] = {"id": job["id"]}
    try:
        isolation.prctl(isolation.PR_SET_PDEATHSIG, signal.SIGKILL)
        os.setsid()
        pid_ns = False
        try:
            isolation.unshare(isolation.CLONE_NEWNET)
        except OSError:
            pass
        if iso.mount_namespace:
            isolation.unshare(isolation.CLONE_NEWNS)
            isolation.make_mounts_private()
            if iso.tmpfs:
                # Shared scratch places (and the unix sockets other programs keep there) disappear,
                # except the Python installation and this package when they live there (a venv
                # or a checkout under /tmp): those come back read-only.
                keep = [(p, os.open(p, os.O_PATH)) for p in _readable_under(HIDDEN_DIRS)]
                for shared in HIDDEN_DIRS:
                    if os.path.isdir(shared) and not os.path.islink(shared):
                        isolation.mount_tmpfs(shared, 1 * MiB, 0, mode="0755")
                for path, fd in keep:
                    if os.path.isdir(f"/proc/self/fd/{fd}"):
                        os.makedirs(path, exist_ok=True)
                    else:
                        os.makedirs(os.path.dirname(path), exist_ok=True)
                        open(path, "a").close()
                    isolation.bind_readonly(fd, path)
                    os.close(fd)
                os.makedirs(workdir, exist_ok=True)
                isolation.mount_tmpfs(workdir, limits.tmpfs_bytes, uid if uid is not None else 0)
        if iso.pid_namespace:
            isolation.unshare(isolation.CLONE_NEWPID)
            pid_ns = True
        if uid is not None:
            os.chown(workdir, uid, uid)
        files = []
        for name in ("stdout.txt", "stderr.txt"):
            fd = os.open(os.path.join(workdir, name), os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            if uid is not None:
                os.fchown(fd, uid, uid)
            files.append(fd)
        if cfg.get("_cgroup"):
            isolation.join_cgroup(cfg["_cgroup"])
        r, w = os.pipe()
        base_vm = isolation.current_vm_size()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _reply_process(job, workdir, uid, limits, w, files[0], files[1], base_vm,
                           own_proc=pid_ns and iso.mount_namespace)
        os.close(w)
        os.write(out_fd, f"G {pid}\n".encode())
        line, problem = _read_line(r, t0 + limits.timeout_s, limits.result_bytes)
        _kill_reply(pid, pid_ns)
        _, wstatus = os.waitpid(pid, 0)
        result["exec_seconds"] = round(time.monotonic() - t0, 3)
        result["stdout_tail"] = _tail(files[0], limits.output_tail_bytes)
        result["stderr_tail"] = _tail(files[1], limits.output_tail_bytes)
        # From here on only untrusted bytes are handled: lock the judge down too.
        if uid is not None:
            isolation.drop_privileges(uid)
        try:
            isolation.landlock_restrict([], readable=readable_paths())
        except OSError:
            pass
        isolation.set_limits(address_space=isolation.current_vm_size() + 2 * limits.memory_bytes,
                             cpu_s=int(limits.judge_timeout_s), fsize=0, nofile=None, nproc=None)
        if os.geteuid() == 0:
            isolation.drop_capabilities()
        header = _read_header(line, problem, wstatus, limits)
        if "error" in header:
            result.update(job_kind(job).failed_run(job, header["error"], header["failure"]))
        else:
            result.update(job_kind(job).judge(job, cfg, header, limits))
    except BaseException as exc:  # noqa: BLE001
        result.update(job_kind(job).failed_run(job, "sandbox failure: " + short_exc(exc), JUDGE_ERROR))
    _write_all(out_fd, (json.dumps(result) + "\n").encode())
    os._exit(0)


def short_exc(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _read_header(line: bytes | None, problem: str | None, wstatus: int, limits: SandboxLimits) -> dict:
    """G's result line as a dict, or {"error": why there is none, "failure": its kind} (timeout, too
    large, died, malformed: all the reply's doing, since G runs nothing but the reply and its kind)."""
    if line is None:
        if problem == "timeout":
            return {"error": f"timed out after {limits.timeout_s:g} s", "failure": "timeout"}
        if problem == "too_large":
            return {"error": f"result larger than {limits.result_bytes} bytes", "failure": "resource_limit"}
        killed = os.WIFSIGNALED(wstatus) and os.WTERMSIG(wstatus) in (signal.SIGKILL, signal.SIGXCPU, signal.SIGXFSZ)
        return {"error": f"reply process died without a result ({_describe_exit(wstatus)})",
                "failure": "resource_limit" if killed else "runtime_error"}
    try:
        header = json.loads(line)
    except ValueError:
        header = None
    if not isinstance(header, dict) or "error" in header or "failure" in header:
        return {"error": "malformed result from the reply process", "failure": "runtime_error"}
    return header


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _describe_exit(wstatus: int) -> str:
    if os.WIFSIGNALED(wstatus):
        sig = os.WTERMSIG(wstatus)
        return f"killed by {signal.Signals(sig).name}" if sig in signal.Signals._value2member_map_ else f"signal {sig}"
    return f"exit status {os.WEXITSTATUS(wstatus)}"


# ---------------------------------------------------------------------------------- fork server

def probe_isolation() -> Isolation:
    """Try each primitive in a throwaway child so the server itself stays unconfined."""
    iso = Isolation(root=os.geteuid() == 0)
    iso.landlock_abi = isolation.landlock_abi()
    tests = {"net_namespace": "net", "mount_namespace": "mnt", "pid_namespace": "pid", "tmpfs": "tmpfs", "uid_drop": "uid"}
    for attr, what in tests.items():
        setattr(iso, attr, _probe(what))
    if iso.root:
        try:
            isolation.remove_cgroup(isolation.create_pids_cgroup(f"qm-probe-{os.getpid()}", 8))
            iso.pids_cgroup = True
        except OSError:
            pass
    if not iso.root:
        iso.warnings.append("not root: no per-reply uid or cgroup; RLIMIT_NPROC binds the calling uid")
    elif not iso.uid_drop and not iso.pids_cgroup:
        iso.warnings.append("root, but neither a per-reply uid (interpreter unreadable) nor a pids cgroup: "
                            "a fork storm is bounded only by the wall-clock kill")
    if not iso.net_namespace:
        iso.warnings.append("unshare(CLONE_NEWNET) unavailable: no network namespace (Landlock TCP rules only)")
    if not iso.pid_namespace:
        iso.warnings.append("unshare(CLONE_NEWPID) unavailable: leftovers are killed by process group only")
    if not iso.mount_namespace or not iso.tmpfs:
        iso.warnings.append("no private tmpfs: the working directory is a plain temp dir (RLIMIT_FSIZE per file)")
    if iso.landlock_abi < 1:
        iso.warnings.append("Landlock unavailable: writes outside the work dir are limited by the uid drop only")
    return iso


def _probe(what: str) -> bool:
    probe_dir = tempfile.mkdtemp(prefix="qm-probe-")
    try:
        return _probe_in(what, probe_dir)
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)


def _probe_in(what: str, probe_dir: str) -> bool:
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            if what == "net":
                isolation.unshare(isolation.CLONE_NEWNET)
            elif what == "mnt":
                isolation.unshare(isolation.CLONE_NEWNS)
                isolation.make_mounts_private()
            elif what == "pid":
                isolation.unshare(isolation.CLONE_NEWPID)
                child = os.fork()
                if child == 0:
                    os._exit(0 if os.getpid() == 1 else 1)
                _, st = os.waitpid(child, 0)
                os._exit(os.waitstatus_to_exitcode(st))
            elif what == "tmpfs":
                isolation.unshare(isolation.CLONE_NEWNS)
                isolation.make_mounts_private()
                isolation.mount_tmpfs(probe_dir, 1 * MiB, 0)
            elif what == "uid":
                isolation.drop_privileges(SANDBOX_UID_BASE)
                import sysconfig

                for key in ("stdlib", "platstdlib", "purelib"):  # can the interpreter still import?
                    os.listdir(sysconfig.get_paths()[key])
            ok = True
        except OSError:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


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
    for kind in cfg.get("kinds") or list(JOB_KINDS):
        job_kind({"kind": kind}).preload()
    inp = inp or sys.stdin.buffer
    out = out or sys.stdout.buffer
    iso = probe_isolation()
    workers = max(1, int(cfg.get("workers") or 1))
    limits = SandboxLimits(**cfg["limits"])
    out.write((json.dumps({"ready": True, "isolation": asdict(iso)}) + "\n").encode())
    out.flush()
    _remove_stale()
    base = tempfile.mkdtemp(prefix=f"qm-sandbox-{os.getpid()}-")
    os.chmod(base, 0o711)
    cgroups = {}
    running: dict[int, _Running] = {}
    try:
        if iso.pids_cgroup:
            for slot in range(workers):
                cgroups[slot] = isolation.create_pids_cgroup(f"qm-sandbox-{os.getpid()}-{slot}", limits.nproc)
        _serve_loop(cfg, iso, inp, out, workers, limits, base, cgroups, running)
    finally:
        for r in running.values():  # stopped early (SIGTERM, broken pipe): nothing may outlive us
            _sigkill(*([r.reply_pid] if r.reply_pid else []), -r.pid)
            try:
                os.waitpid(r.pid, 0)
            except ChildProcessError:
                pass
        shutil.rmtree(base, ignore_errors=True)
        for path in cgroups.values():
            isolation.remove_cgroup(path)


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

    pattern = re.compile(r"^qm-sandbox-(\d+)-")
    for root, remove in ((tempfile.gettempdir(), lambda p: shutil.rmtree(p, ignore_errors=True)),
                         (isolation.PIDS_CGROUP_ROOT, isolation.remove_cgroup)):
        try:
            names = os.listdir(root)
        except OSError:
            continue
        for name in names:
            m = pattern.match(name)
            if m and not _pid_alive(int(m.group(1))):
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
            _supervise(job, cfg, iso, workdir, uid, w)
        finally:
            os._exit(1)
    os.close(w)
    return _Running(job=job, pid=pid, fd=r, workdir=workdir, slot=slot,
                    deadline=time.monotonic() + limits.timeout_s + limits.judge_timeout_s + 5)


def _finish(r: _Running, out, forced_error: str | None) -> None:
    if forced_error is not None:
        _sigkill(*([r.reply_pid] if r.reply_pid else []), -r.pid, r.pid)
    os.close(r.fd)
    try:
        os.waitpid(r.pid, 0)
    except ChildProcessError:
        pass
    shutil.rmtree(r.workdir, ignore_errors=True)
    result = None
    if not forced_error:
        try:
            result = json.loads(r.buf.strip().splitlines()[-1]) if r.buf.strip() else None
        except ValueError:
            result = None
        if not isinstance(result, dict):
            forced_error = "judge process died without a result"
    if forced_error:
        result = job_kind(r.job).failed_run(r.job, forced_error, JUDGE_ERROR)
    result["id"] = r.job["id"]
    out.write((json.dumps(result) + "\n").encode())
    out.flush()


# ---------------------------------------------------------------------------------- client side

class SandboxError(RuntimeError):
    """The fork server itself failed (not a reply): scoring cannot be trusted."""


def run_jobs(jobs: list[dict], cfg: dict, *, progress: bool = False, desc: str = "scoring",
             info: dict | None = None) -> Iterator[tuple[int, dict]]:
    """Start a fork server with `cfg` (workers, limits, the kinds' settings), feed it `jobs` (each with
    an int `id`), yield (id, result) as results arrive. `info`, if given, receives the isolation report."""
    # The server imports this very checkout of the package, whatever the interpreter's install points at.
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-m", "evaluation.sandbox", json.dumps(cfg)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=scrubbed_env({"PYTHONPATH": os.pathsep.join(
                                [here, *filter(None, [os.environ.get("PYTHONPATH")])])}),
                            cwd="/", start_new_session=True)
    bar = None
    try:
        ready = proc.stdout.readline()
        if not ready:
            raise SandboxError(f"sandbox server exited with status {proc.wait()} before it was ready")
        hello = json.loads(ready)
        for w in hello["isolation"].get("warnings", []):
            log.warning("sandbox: %s", w)
        if info is not None:
            info.update(hello["isolation"])

        def feed() -> None:
            try:
                for job in jobs:
                    proc.stdin.write((json.dumps(job) + "\n").encode())
                proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass

        threading.Thread(target=feed, daemon=True).start()
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), desc=desc, unit="job")
        seen = 0
        while seen < len(jobs):
            line = proc.stdout.readline()
            if not line:
                raise SandboxError(f"sandbox server died after {seen}/{len(jobs)} jobs (status {proc.wait()})")
            out = json.loads(line)
            seen += 1
            if bar:
                bar.update(1)
            yield int(out.pop("id")), out
    except BaseException:
        # Ctrl-C or a broken server: stop now (its forks die with it through PR_SET_PDEATHSIG).
        if proc.poll() is None:
            proc.terminate()  # the server kills its running sandboxes and removes its dirs/cgroups
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise
    finally:
        if bar:
            bar.close()
        if proc.poll() is None:
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait()


def main() -> None:
    cfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {"limits": {}}
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop us (stdin EOF)

    def _term(signum, frame):  # noqa: ARG001
        raise SystemExit(1)  # unwinds through serve()'s cleanup

    signal.signal(signal.SIGTERM, _term)
    serve(cfg)


if __name__ == "__main__":
    main()
