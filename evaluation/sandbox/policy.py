"""What the sandbox allows: limits, the isolation report, the environment allow-list, what a reply may read
(and so what the minimal root holds), and fail-closed isolation steps."""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass, field

from evaluation.sandbox.kinds import short_exc
from evaluation.sandbox.linux import namespaces

# The `evaluation` package directory: the only part of a checkout a reply (or the judge) may read.
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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
    result_bytes: int = 8 * MiB      # what the reply process sends back (QPY line, call responses)
    output_tail_bytes: int = 2000    # stdout/stderr kept for the error message
    cpus: float = 1.0                # CPU bandwidth of one worker slot (cgroup cpu quota)


@dataclass
class Isolation:
    """What this host allowed; anything False is a documented, logged degradation."""
    root: bool = False
    uid_drop: bool = False
    net_namespace: bool = False
    pid_namespace: bool = False
    ipc_namespace: bool = False      # each reply's SysV IPC / POSIX mqueue objects die with it
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


# What the fork server (and, through /proc/self/environ, the reply) may see of the caller's
# environment: an allow-list. Anything else (DATABASE_URL, SENTRY_DSN, API keys, ...) never reaches
# it. QM_SANDBOX_FAULTS is the test-only switch for fault injection (see fault_of).
ENV_ALLOWED = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "PYTHONPATH", "PYTHONHASHSEED", "LD_LIBRARY_PATH",
               "MPLBACKEND", "QM_SANDBOX_FAULTS")
ENV_ALLOWED_PREFIXES = ("LC_",)
THREADS_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1",
                # Rust-side qiskit stays single-threaded: a rayon pool does not survive fork()
                # (a forked child waiting on it hangs on a futex forever).
                "QISKIT_IN_PARALLEL": "TRUE", "QISKIT_PARALLEL": "FALSE"}


def scrubbed_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the fork server: only allow-listed variables of the caller (never a deny-list),
    single-threaded numerics, then `extra`."""
    keep = {k: v for k, v in os.environ.items() if k in ENV_ALLOWED or k.startswith(ENV_ALLOWED_PREFIXES)}
    keep.update(THREADS_ENV)
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

    package = PACKAGE_DIR
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


def readable_under(dirs: tuple[str, ...]) -> list[str]:
    """The readable paths that lie inside one of `dirs`, outermost only (binding those covers the rest)."""
    inside = sorted((p for p in readable_paths()
                     if any(os.path.commonpath([p, d]) == d for d in dirs if os.path.isdir(d))), key=len)
    outer: list[str] = []
    for p in inside:
        if not any(os.path.commonpath([p, o]) == o for o in outer):
            outer.append(p)
    return outer


def root_plan() -> namespaces.RootPlan:
    """What the minimal root holds read-only: the readable paths, less what it builds itself."""
    return _root_plan_for(tuple(sys.path))


@functools.lru_cache(maxsize=4)
def _root_plan_for(import_path: tuple[str, ...]) -> namespaces.RootPlan:
    return namespaces.plan_root([p for p in _readable_paths(import_path) if p not in ("/dev", "/proc", "/sys")])


class IsolationError(RuntimeError):
    """An isolation step failed for this reply: the reply is not run (fail closed)."""


FAULTS_ENV = "QM_SANDBOX_FAULTS"


def fault_of(job: dict) -> str | None:
    """TEST-ONLY fault injection: the isolation step named by job["_fault"] fails as if the kernel had
    refused it. Honoured only when the fork server's environment has QM_SANDBOX_FAULTS=1."""
    return job.get("_fault") if os.environ.get(FAULTS_ENV) == "1" else None


def step(name: str, fault: str | None, fn, *args, **kwargs):
    """Run one isolation step; any failure (or an injected one) becomes IsolationError naming it."""
    try:
        if fault == name:
            raise OSError(f"injected fault ({FAULTS_ENV}=1)")
        return fn(*args, **kwargs)
    except (OSError, ValueError) as exc:
        raise IsolationError(f"{name}: {short_exc(exc)}") from exc
