"""Run model-written code in isolation: the one runner behind every judge (threat model: docs/sandbox.md).

A job's kind names the module that judges it (JOB_KINDS: the circuit judge, evaluation.circuit_judge).
`run_jobs` starts the fork server and streams jobs through it. Process layout (one fork server per
scoring session):

  parent (CLI / library; may hold API keys)
    └─ fork server: `python -m evaluation.sandbox` exec'd with an allow-listed environment; imports
       qiskit once; never runs reply code; one memory/cpu/pids cgroup per worker slot.   [trusted]
         └─ I, the supervisor/judge, forked per reply: new session; joins its slot's pids and cpu
            cgroups; unshares network, mount and PID namespaces; pivot_root into a minimal root
            (read-only interpreter, import path, this package, system libraries; /dev of
            null/zero/random/urandom; the reply's size-capped tmpfs working directory). [trusted]
              └─ G, PID 1 of the new PID namespace: joins the slot's memory cgroup, mounts its own
                 /proc, drops to a per-slot uid, Landlock (writes only in its directory, no TCP),
                 rlimits (AS, CPU, FSIZE, NOFILE, NPROC, CORE), no capabilities, a seccomp filter,
                 fixed environment, stdout/stderr to files in its directory; reports "ok" on a
                 setup pipe it then closes (any failed step: the reply is not run, judge_error);
                 execs the reply; the job's kind collects what its judge needs (the circuit judge:
                 the QuantumCircuit as QPY) and sends it back in one JSON line, size-capped.
                                                                       [hostile]
  I reads G's line with a wall-clock deadline, then SIGKILLs G (PID-namespace init: the kernel kills
  every process G left behind), drops to the sandbox uid under Landlock, rlimits and seccomp itself,
  and lets the job's kind judge G's line (the circuit judge parses the untrusted QPY, verifies the circuit and
  runs the barren-plateau check); the numbers go to the fork server as JSON. I never executes reply code,
  so a reply cannot tamper with the judge that measures it; the parent only ever parses capped JSON.
"""

from __future__ import annotations

import fcntl
import functools
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
    cpus: float = 1.0                # CPU bandwidth of one worker slot (cgroup cpu quota)


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
    # pivot_root into a tmpfs holding only the interpreter, its import path, this package and system
    # libraries (read-only), a /dev of null/zero/random/urandom and the reply's work dir
    minimal_root: bool = False
    seccomp: bool = False            # metadata syscalls, unix/netlink/packet/vsock sockets, ... denied
    seccomp_arch: str = ""           # the syscall table the filter was built for ("" = none)
    env_allowlist: bool = True       # the fork server's environment holds only allow-listed variables
    cgroup_version: str = ""         # "v1", "v2" or "" (none usable)
    memory_cgroup: bool = False      # memory of all of a reply's processes (anon + shmem/memfd) capped
    memory_limit_bytes: int = 0      # that cap: the reply budget + one copy of the forked interpreter
    cpu_cgroup: bool = False         # each worker slot capped at SandboxLimits.cpus CPUs, equal shares
    fail_closed: bool = True         # a reply whose isolation step fails is not run (judge_error)
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


# What the fork server (and, through /proc/self/environ, the reply) may see of the caller's
# environment: an allow-list. Anything else (DATABASE_URL, SENTRY_DSN, API keys, ...) never reaches
# it. QM_SANDBOX_FAULTS is the test-only switch for fault injection (see _fault).
ENV_ALLOWED = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH", "PYTHONHASHSEED", "LD_LIBRARY_PATH",
               "MPLBACKEND", "QM_SANDBOX_FAULTS")
ENV_ALLOWED_PREFIXES = ("LC_",)
_THREADS_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1",
                # Rust-side qiskit stays single-threaded: a rayon pool does not survive fork()
                # (a forked child waiting on it hangs on a futex forever).
                "QISKIT_IN_PARALLEL": "TRUE", "QISKIT_PARALLEL": "FALSE"}


def scrubbed_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the fork server: only allow-listed variables of the caller (never a deny-list),
    single-threaded numerics, then `extra`."""
    keep = {k: v for k, v in os.environ.items() if k in ENV_ALLOWED or k.startswith(ENV_ALLOWED_PREFIXES)}
    keep.update(_THREADS_ENV)
    keep["PYTHONDONTWRITEBYTECODE"] = "1"
    keep.update(extra or {})
    return keep


_SYSTEM_READ = ("/usr", "/lib", "/lib64", "/bin", "/sbin", "/dev", "/proc", "/sys", "/etc/ld.so.cache",
                "/etc/localtime", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/ssl", "/etc/matplotlibrc",
                "/etc/os-release", "/etc/fonts", "/etc/hosts", "/etc/resolv.conf", "/etc/mime.types")


def readable_paths() -> list[str]:
    """What reply code may read: the Python installation, its import path, system libraries.
    Not /root, /home, /work, /tmp, /etc/shadow, ... (where credentials live). Computed once per
    import path (the fork server warms it before forking)."""
    return list(_readable_paths(tuple(sys.path)))


@functools.lru_cache(maxsize=4)
def _readable_paths(import_path: tuple[str, ...]) -> tuple[str, ...]:
    import sysconfig

    package = os.path.dirname(os.path.abspath(__file__))
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, package}
    # A checkout on the import path (PYTHONPATH) contributes only this package, not the rest of the
    # tree (.git, configs, a developer's .env ...): its other entries are never imported by a judge.
    installed = {os.path.abspath(v) for v in sysconfig.get_paths().values()}
    checkout = os.path.dirname(package)
    paths.update(p for p in import_path if p and os.path.isabs(p)
                 and not (os.path.abspath(p) == checkout and checkout not in installed))
    paths.update(_SYSTEM_READ)
    # never a whole tree like "/" (sys.path[0] of `python -m` is the working directory)
    return tuple(sorted(p for p in paths if os.path.exists(p)
                        and os.path.abspath(p) not in ("/", "/root", "/home", "/work", "/tmp", "/etc", "/var")))


def _readable_under(dirs: tuple[str, ...]) -> list[str]:
    """The readable paths that lie inside one of `dirs`, outermost only (binding those covers the rest)."""
    inside = sorted((p for p in readable_paths()
                     if any(os.path.commonpath([p, d]) == d for d in dirs if os.path.isdir(d))), key=len)
    outer: list[str] = []
    for p in inside:
        if not any(os.path.commonpath([p, o]) == o for o in outer):
            outer.append(p)
    return outer


def _root_plan() -> isolation.RootPlan:
    """What the minimal root holds read-only: the readable paths, less what it builds itself."""
    return _root_plan_for(tuple(sys.path))


@functools.lru_cache(maxsize=4)
def _root_plan_for(import_path: tuple[str, ...]) -> isolation.RootPlan:
    return isolation.plan_root([p for p in _readable_paths(import_path) if p not in ("/dev", "/proc", "/sys")])


class IsolationError(RuntimeError):
    """An isolation step failed for this reply: the reply is not run (fail closed)."""


FAULTS_ENV = "QM_SANDBOX_FAULTS"


def _fault(job: dict) -> str | None:
    """TEST-ONLY fault injection: the isolation step named by job["_fault"] fails as if the kernel had
    refused it. Honoured only when the fork server's environment has QM_SANDBOX_FAULTS=1."""
    return job.get("_fault") if os.environ.get(FAULTS_ENV) == "1" else None


def _step(name: str, fault: str | None, fn, *args, **kwargs):
    """Run one isolation step; any failure (or an injected one) becomes IsolationError naming it."""
    try:
        if fault == name:
            raise OSError(f"injected fault ({FAULTS_ENV}=1)")
        return fn(*args, **kwargs)
    except (OSError, ValueError) as exc:
        raise IsolationError(f"{name}: {short_exc(exc)}") from exc


# ------------------------------------------------------------------------------------------ reply (G)

_RESULT_FD, _SETUP_FD = 3, 4


def _reply_process(job: dict, iso: Isolation, workdir: str, uid: int | None, limits: SandboxLimits, result_fd: int,
                   setup_fd: int, out_fd: int, err_fd: int, base_vm: int, own_proc: bool,
                   memory_procs_fd: int | None, fault: str | None) -> None:
    """Runs in G: locks itself down, reports "ok" on setup_fd (or which step failed, and exits without
    running anything), executes the job's code, lets its kind collect what the judge needs, and writes
    that as one JSON line to result_fd. Never returns."""
    status = 1
    report_fd = setup_fd  # where a failed step is reported (the setup channel moves to _SETUP_FD below)
    try:
        isolation.prctl(isolation.PR_SET_PDEATHSIG, signal.SIGKILL)
        try:
            if memory_procs_fd is not None:  # only G and its descendants are charged to the slot's memory cap
                _step("memory_cgroup", fault, os.write, memory_procs_fd, b"0")
            if own_proc:
                _step("own_proc", fault, isolation.unshare, isolation.CLONE_NEWNS)
                _step("own_proc", fault, isolation.mount_proc)
            devnull = os.open("/dev/null", os.O_RDONLY)
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in (devnull, out_fd, err_fd, result_fd, setup_fd)]
            for target, fd in enumerate(high):  # 0 stdin, 1 stdout, 2 stderr, 3 result, 4 setup
                os.dup2(fd, target)
            report_fd = _SETUP_FD
            os.closerange(_SETUP_FD + 1, 1 << 16)
            if uid is not None:
                _step("capabilities", fault, isolation.drop_bounding_set)
                _step("uid_drop", fault, isolation.drop_privileges, uid)
                # a credential change clears the parent-death signal: re-arm it, or G (and all it
                # forked) would outlive a killed I
                _step("uid_drop", fault, isolation.prctl, isolation.PR_SET_PDEATHSIG, signal.SIGKILL)
            if iso.landlock_abi >= 1:
                _step("landlock", fault, isolation.landlock_restrict, [workdir], ["/dev/null"],
                      readable=readable_paths())
            os.chdir(workdir)
            os.environ.clear()
            os.environ.update({"HOME": workdir, "TMPDIR": workdir, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
                               "MPLCONFIGDIR": workdir, "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1",
                               **_THREADS_ENV})
            tempfile.tempdir = workdir  # the fork server cached its own (hidden) temp dir: the reply's is here
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write fails with EFBIG instead
            _step("rlimits", fault, isolation.set_limits, address_space=base_vm + limits.memory_bytes,
                  cpu_s=int(limits.timeout_s) + 1, fsize=limits.file_bytes, nofile=limits.nofile,
                  nproc=limits.nproc if uid is not None else None)
            if os.geteuid() == 0:
                _step("capabilities", fault, isolation.drop_capabilities)
            if iso.seccomp:
                _step("seccomp", fault, isolation.seccomp_restrict)
        except IsolationError as exc:
            _write_all(report_fd, str(exc).encode()[:500])
            os._exit(3)
        _write_all(_SETUP_FD, b"ok")
        os.close(_SETUP_FD)  # from here on the reply runs: it cannot speak on the setup channel
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
        kind = job_kind(job)
        context = kind.collect(namespace, job, header)
        _write_all(_RESULT_FD, (json.dumps(header) + "\n").encode())
        if hasattr(kind, "collect_more"):  # optional, after the verdict-bearing line: may run out of time
            extra = kind.collect_more(context, job, header)
            _write_all(_RESULT_FD, (json.dumps(extra) + "\n").encode())
        status = 0
    except BaseException:  # noqa: BLE001
        try:
            os.write(2, traceback.format_exc()[-1500:].encode())
        except OSError:
            pass
    finally:
        os._exit(status)


# ---------------------------------------------------------------------------------- supervisor (I)

def _read_line(fd: int, deadline: float, cap: int, pending: bytes = b"") -> tuple[bytes | None, str | None, bytes]:
    """One newline-terminated line from fd (after the bytes already `pending`) before `deadline`, at
    most `cap` bytes: (line or None, why not, the bytes read past the line)."""
    chunks, size = [pending], len(pending)
    while b"\n" not in b"".join(chunks):
        if size > cap:
            return None, "too_large", b""
        left = deadline - time.monotonic()
        if left <= 0:
            return None, "timeout", b""
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return None, "eof", b""
        chunks.append(chunk)
        size += len(chunk)
    line, rest = b"".join(chunks).split(b"\n", 1)
    if len(line) > cap:
        return None, "too_large", b""
    return line + b"\n", None, rest


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


def _supervise(job: dict, cfg: dict, iso: Isolation, workdir: str, uid: int | None, out_fd: int) -> None:
    """Runs in I. Writes `G <pid>` then one JSON result line to out_fd. Never returns."""
    limits = SandboxLimits(**cfg["limits"])
    t0 = time.monotonic()
    result: dict[str, Any] = {"id": job["id"]}
    fault = _fault(job)
    try:
        isolation.prctl(isolation.PR_SET_PDEATHSIG, signal.SIGKILL)
        os.setsid()
        pid_ns = False
        cg: isolation.SlotCgroup | None = cfg.get("_cgroup")
        memory_procs_fd = peak_fd = None
        if cg is not None:
            # I (and so G) joins the slot's pids and cpu groups; only G joins the memory group (the
            # judge's own memory is bounded by its rlimit), through a handle opened here, before the
            # host's /sys disappears from view.
            for ctrl in ("pids", "cpu"):
                if ctrl in cg.dirs:
                    _step(f"{ctrl}_cgroup", fault, isolation.join_cgroup, cg.dirs[ctrl])
            if "memory" in cg.dirs:
                memory_procs_fd = _step("memory_cgroup", fault, os.open, cg.procs("memory"), os.O_WRONLY)
                peak_fd = _step("memory_cgroup", fault, os.open, cg.peak_file(), os.O_RDWR)
                if cg.version == "v1":
                    os.pwrite(peak_fd, b"0", 0)  # this slot's peak restarts with this job
        if iso.net_namespace:
            _step("net_namespace", fault, isolation.unshare, isolation.CLONE_NEWNET)
        base_vm = isolation.current_vm_size()
        if iso.mount_namespace:
            _step("mount_namespace", fault, isolation.unshare, isolation.CLONE_NEWNS)
            _step("mount_namespace", fault, isolation.make_mounts_private)
            if iso.minimal_root:
                _step("minimal_root", fault, _enter_minimal_root, workdir, limits, uid)
            elif iso.tmpfs:
                _step("tmpfs", fault, _hide_shared_dirs, workdir, limits, uid)
        if iso.pid_namespace:
            _step("pid_namespace", fault, isolation.unshare, isolation.CLONE_NEWPID)
            pid_ns = True
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
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.close(sr)
            _reply_process(job, iso, workdir, uid, limits, w, sw, files[0], files[1], base_vm,
                           pid_ns and iso.mount_namespace, memory_procs_fd, fault)
        os.close(w)
        os.close(sw)
        if memory_procs_fd is not None:
            os.close(memory_procs_fd)
        os.write(out_fd, f"G {pid}\n".encode())
        setup = _read_setup(sr, t0 + limits.timeout_s)
        os.close(sr)
        more = None  # the kind's optional second line (collect_more); none if it never arrives in time
        if setup == "ok":
            line, problem, rest = _read_line(r, t0 + limits.timeout_s, limits.result_bytes)
            if line is not None and hasattr(job_kind(job), "collect_more"):
                more, _, _ = _read_line(r, t0 + limits.timeout_s, limits.result_bytes, rest)
        _kill_reply(pid, pid_ns)
        _, wstatus = os.waitpid(pid, 0)
        result["exec_seconds"] = round(time.monotonic() - t0, 3)
        result["stdout_tail"] = _tail(files[0], limits.output_tail_bytes)
        result["stderr_tail"] = _tail(files[1], limits.output_tail_bytes)
        peak = _memory_peak(peak_fd)
        if peak is not None:
            result["memory_peak_bytes"] = peak
        if setup != "ok":
            raise IsolationError(setup)
        # From here on only untrusted bytes are handled: lock the judge down too.
        if uid is not None:
            _step("judge_capabilities", fault, isolation.drop_bounding_set)
            _step("judge_uid_drop", fault, isolation.drop_privileges, uid)
            _step("judge_uid_drop", fault, isolation.prctl, isolation.PR_SET_PDEATHSIG, signal.SIGKILL)
        if iso.landlock_abi >= 1:
            _step("judge_landlock", fault, isolation.landlock_restrict, [], readable=readable_paths())
        isolation.set_limits(address_space=isolation.current_vm_size() + 2 * limits.memory_bytes,
                             cpu_s=int(limits.judge_timeout_s), fsize=0, nofile=None, nproc=None)
        if os.geteuid() == 0:
            _step("judge_capabilities", fault, isolation.drop_capabilities)
        if iso.seccomp:
            _step("judge_seccomp", fault, isolation.seccomp_restrict)
        header = _read_header(line, problem, wstatus, limits)
        if "error" not in header and hasattr(job_kind(job), "collect_more"):
            header = job_kind(job).merge_more(header, _read_header(more, "timeout", wstatus, limits))
        if "error" in header:
            result.update(job_kind(job).failed_run(job, header["error"], header["failure"]))
        else:
            # what the judge has decided so far, as a line the server keeps if the judge dies or times out
            emit = lambda part: _write_all(out_fd, (json.dumps({**result, **part, "partial": True}) + "\n").encode())  # noqa: E731
            result.update(job_kind(job).judge(job, dict(cfg, _emit_partial=emit), header, limits))
    except IsolationError as exc:
        # fail closed: the reply did not run (or the judge would have run less isolated than logged)
        result.update(job_kind(job).failed_run(job, f"isolation failed: {exc}"[:300], JUDGE_ERROR))
    except BaseException as exc:  # noqa: BLE001
        result.update(job_kind(job).failed_run(job, "sandbox failure: " + short_exc(exc), JUDGE_ERROR))
    _write_all(out_fd, (json.dumps(result) + "\n").encode())
    os._exit(0)


def _enter_minimal_root(workdir: str, limits: SandboxLimits, uid: int | None) -> None:
    """Make a tmpfs on `workdir` (a fresh, empty host directory) the root of I's mount namespace, with
    the read-only paths, a reduced /dev, a procfs and, at the same path as on the host, the reply's
    size-capped working directory. Host sockets, devices, home and scratch directories do not exist
    in it, and every directory on the way to the interpreter is traversable by the sandbox uid."""
    isolation.build_root(workdir, _root_plan())
    inner = workdir.rstrip("/") + workdir
    os.makedirs(inner, mode=0o755, exist_ok=True)
    isolation.mount_tmpfs(inner, limits.tmpfs_bytes, uid if uid is not None else 0)
    proc = workdir.rstrip("/") + "/proc"
    isolation.mount_proc_at(proc)
    isolation.pivot_root(workdir)
    isolation.remount_readonly("/")


def _hide_shared_dirs(workdir: str, limits: SandboxLimits, uid: int | None) -> None:
    """Without a minimal root: empty tmpfs over the shared scratch places (and the unix sockets other
    programs keep there), except the Python installation and this package when they live there (a
    venv or a checkout under /tmp): those come back read-only."""
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

def probe_isolation(limits: SandboxLimits | None = None) -> Isolation:
    """Try each primitive in a throwaway child so the server itself stays unconfined."""
    limits = limits or SandboxLimits()
    iso = Isolation(root=os.geteuid() == 0)
    iso.landlock_abi = isolation.landlock_abi()
    tests = {"net_namespace": "net", "mount_namespace": "mnt", "pid_namespace": "pid", "tmpfs": "tmpfs",
             "minimal_root": "root", "seccomp": "seccomp"}
    for attr, what in tests.items():
        setattr(iso, attr, _probe(what))
    iso.uid_drop = _probe("uid_root" if iso.minimal_root else "uid")
    if iso.seccomp:
        iso.seccomp_arch = isolation.machine()
    iso.cgroup_version = isolation.cgroup_parents()[0]
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
    if not iso.mount_namespace or not iso.tmpfs:
        iso.warnings.append("no private tmpfs: the working directory is a plain temp dir (RLIMIT_FSIZE per file)")
    if iso.mount_namespace and iso.tmpfs and not iso.minimal_root:
        iso.warnings.append("no minimal root (pivot_root failed): the host's tree stays visible (reads limited by "
                            "Landlock; /tmp, /run, /dev/shm hidden); devices and pathname sockets elsewhere are not")
    if not iso.seccomp:
        iso.warnings.append(f"no seccomp filter ({isolation.machine()}): chmod/utime/xattr on visible host files "
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


def _slot_cgroup(name: str, limits: SandboxLimits, controllers: tuple[str, ...], budget: int) -> isolation.SlotCgroup:
    return isolation.create_slot_cgroup(
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

    isolation.drop_privileges(SANDBOX_UID_BASE)
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
            elif what in ("root", "uid_root"):
                isolation.unshare(isolation.CLONE_NEWNS)
                isolation.make_mounts_private()
                _enter_minimal_root(probe_dir, SandboxLimits(tmpfs_bytes=1 * MiB), None)
                if not all(os.path.exists(p) for p in (sys.executable, __file__, "/dev/null", "/dev/urandom")):
                    os._exit(1)
                if what == "uid_root":
                    _can_import_as_sandbox_uid()
            elif what == "uid":
                _can_import_as_sandbox_uid()
            elif what == "seccomp":
                isolation.seccomp_restrict()
                try:
                    os.chmod(probe_dir, 0o700)
                    os._exit(1)
                except PermissionError:
                    pass
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
    _remove_stale()  # first: a server stopped while it still imports or probes has done this much
    from evaluation import stack

    stack.preload(cfg.get("preload_modules") or [])  # the Qiskit stack the jobs' code imports
    for kind in cfg.get("kinds") or list(JOB_KINDS):
        job_kind({"kind": kind}).preload()
    inp = inp or sys.stdin.buffer
    out = out or sys.stdout.buffer
    workers = max(1, int(cfg.get("workers") or 1))
    limits = SandboxLimits(**cfg["limits"])
    _root_plan()  # path resolution done once here, inherited by every fork
    if isolation.machine() in isolation.SYSCALLS:
        isolation.seccomp_program(isolation.machine())
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
            _sigkill(*([r.reply_pid] if r.reply_pid else []), -r.pid)
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
    cgroup_dirs = sorted(set(isolation.cgroup_parents()[1].values()))
    for root, remove in ((tempfile.gettempdir(), lambda p: shutil.rmtree(p, ignore_errors=True)),
                         *((d, isolation.remove_cgroup) for d in cgroup_dirs)):
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
    lines = [x for x in r.buf.split(b"\n")[:-1] if x.strip()]  # complete lines only
    try:
        last = json.loads(lines[-1]) if lines else None
    except ValueError:
        last = None
    partial = last if isinstance(last, dict) and last.get("partial") else None
    result = None
    if not forced_error:
        result = last if isinstance(last, dict) and not partial else None
        if result is None:
            forced_error = "judge process died without a result"
    if forced_error:  # a partial line (the judge's verdicts before it stopped) is kept by the kind
        result = job_kind(r.job).failed_run(r.job, forced_error, JUDGE_ERROR, **({"partial": partial} if partial else {}))
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
