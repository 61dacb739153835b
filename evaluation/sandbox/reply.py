"""G, the reply process (hostile): locks itself down, runs the job's code, hands over what its kind collects.

Everything G writes after the reply's code started is written by a process the reply controls (its code can
patch this module, write to any descriptor G holds, start threads). The judge (I) therefore decides only from
what it observes itself: whether G ended with this module's own exit path (status 0) before the deadline I
enforces, and records whose framing it checks and whose content it verifies (evaluation.sandbox.supervisor).
"""

from __future__ import annotations

import fcntl
import io
import os
import signal
import sys
import tempfile
import time
import traceback
from typing import Any

from evaluation.sandbox import channel
from evaluation.sandbox.kinds import interactive, job_kind, short_exc
from evaluation.sandbox.linux import creds, landlock, namespaces, seccomp
from evaluation.sandbox.linux.libc import PR_SET_PDEATHSIG, prctl
from evaluation.sandbox.policy import (PACKAGE_DIR, THREADS_ENV, Isolation, IsolationError, SandboxLimits,
                                       readable_paths, step)

RESULT_FD, SETUP_FD, CALLS_FD = 3, 4, 5
# What a reply must never read: the HumanEval dataset (tests, canonical solutions). G covers it with an empty
# tmpfs in its own mount namespace; the judge (I) still reads it.
HIDDEN_FROM_REPLY = (os.path.join(PACKAGE_DIR, "humaneval", "data"),)


def run_reply(job: dict, iso: Isolation, workdir: str, uid: int | None, limits: SandboxLimits, fds: dict[str, int],
              base_vm: int, own_proc: bool, memory_procs_fd: int | None, fault: str | None,
              deadline: float) -> None:
    """Runs in G: locks itself down, reports "ok" on the setup pipe (or which step failed, and exits without
    running anything), executes the job's code and lets its kind hand over what the judge needs. `fds`: result,
    setup, stdout, stderr and (interactive kinds) calls. Never returns; exits 0 only through its own end."""
    status = 1
    report_fd = fds["setup"]  # where a failed step is reported (the setup channel moves to SETUP_FD below)
    try:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        try:
            if memory_procs_fd is not None:  # only G and its descendants are charged to the slot's memory cap
                step("memory_cgroup", fault, os.write, memory_procs_fd, b"0")
            if own_proc:
                step("own_proc", fault, namespaces.unshare, namespaces.CLONE_NEWNS)
                step("own_proc", fault, namespaces.mount_proc)
                step("hide_data", fault, _hide_from_reply)
            report_fd = _arrange_fds(fds)
            if uid is not None:
                step("capabilities", fault, creds.drop_bounding_set)
                step("uid_drop", fault, creds.drop_privileges, uid)
                # a credential change clears the parent-death signal: re-arm it, or G (and all it
                # forked) would outlive a killed I
                step("uid_drop", fault, prctl, PR_SET_PDEATHSIG, signal.SIGKILL)
            if iso.landlock_abi >= 1:
                step("landlock", fault, landlock.landlock_restrict, [workdir], ["/dev/null"],
                     readable=readable_paths())
            os.chdir(workdir)
            os.environ.clear()
            os.environ.update({"HOME": workdir, "TMPDIR": workdir, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
                               "MPLCONFIGDIR": workdir, "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1",
                               **THREADS_ENV})
            tempfile.tempdir = workdir  # the fork server cached its own (hidden) temp dir: the reply's is here
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write fails with EFBIG instead
            step("rlimits", fault, creds.set_limits, address_space=base_vm + limits.memory_bytes,
                 cpu_s=int(limits.timeout_s) + 1, fsize=limits.file_bytes, nofile=limits.nofile,
                 nproc=limits.nproc if uid is not None else None)
            if os.geteuid() == 0:
                step("capabilities", fault, creds.drop_capabilities)
            if iso.seccomp:
                step("seccomp", fault, seccomp.seccomp_restrict)
        except IsolationError as exc:
            channel.write_all(report_fd, str(exc).encode()[:500])
            os._exit(3)
        channel.write_all(SETUP_FD, b"ok")
        os.close(SETUP_FD)  # from here on the reply runs: it cannot speak on the setup channel
        status = _run_and_hand_over(job, own_proc, deadline)
    except BaseException:  # noqa: BLE001
        try:
            os.write(2, traceback.format_exc()[-1500:].encode())
        except OSError:
            pass
    finally:
        os._exit(status)


def _hide_from_reply() -> None:
    for path in HIDDEN_FROM_REPLY:
        if os.path.isdir(path):
            namespaces.mount_tmpfs(path, 4096, 0, mode="0555")


def _arrange_fds(fds: dict[str, int]) -> int:
    """0 stdin (/dev/null), 1 stdout, 2 stderr, 3 result, 4 setup (5 calls); everything else closed."""
    devnull = os.open("/dev/null", os.O_RDONLY)
    order = [devnull, fds["stdout"], fds["stderr"], fds["result"], fds["setup"]]
    if "calls" in fds:
        order.append(fds["calls"])
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in order]
    for target, fd in enumerate(high):
        os.dup2(fd, target)
    os.closerange(len(order), 1 << 16)
    return SETUP_FD


def _run_and_hand_over(job: dict, own_proc: bool, deadline: float) -> int:
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", buffering=0), write_through=True)
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", buffering=0), write_through=True)
    sys.argv = ["reply.py"]
    header: dict[str, Any] = {"exec_error": None}
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": os.path.join(os.getcwd(), "reply.py")}
    kind = job_kind(job)
    send = _sender()  # bound before the reply runs: what the reply patches later is not what sends
    try:
        exec(compile(job["code"], "reply.py", "exec", dont_inherit=True), namespace)
    except SystemExit as exc:
        header["exit"] = str(exc.code)[:200]
    except BaseException as exc:  # noqa: BLE001 - anything the reply raises is its own failure
        header["exec_error"] = short_exc(exc)
    if interactive(kind):
        send(channel.dumps_line(header))
        with os.fdopen(CALLS_FD, "rb", buffering=0) as rfile, os.fdopen(RESULT_FD, "wb", buffering=0) as wfile:
            kind.serve_calls(namespace, job, rfile, wfile, header["exec_error"])
        return 0
    if own_proc and os.getpid() == 1:
        _kill_leftovers(deadline)
    context = kind.collect(namespace, job, header)
    send(channel.dumps_line(header))
    if hasattr(kind, "collect_more"):  # optional, time-boxed by the kind itself (a forked child cannot do it:
        # the reply may have started qiskit's Rust thread pool, which a fork leaves without its threads)
        send(channel.dumps_line(kind.collect_more(context, job, header)))
    return 0


def _sender():
    """A writer of whole records to the result pipe that refuses (G exits 4: no verdict) when the descriptor is
    no longer that pipe: a reply that points it elsewhere (dup2 of /dev/null) cannot silence G's own record
    while its forged one stands. Bound to the os functions of this moment, before any reply code ran."""
    fstat, write, exit_ = os.fstat, os.write, os._exit
    st = fstat(RESULT_FD)
    ident = (st.st_dev, st.st_ino)

    def send(data: bytes) -> None:
        now = fstat(RESULT_FD)
        if (now.st_dev, now.st_ino) != ident:
            exit_(4)
        view = memoryview(data)
        while view:
            view = view[write(RESULT_FD, view):]

    return send


def _kill_leftovers(deadline: float) -> None:
    """G is init of its PID namespace: every other process in it is something the reply started. They end now,
    before anything is collected, so none can write into the records G is about to send."""
    while time.monotonic() < deadline:
        try:
            os.kill(-1, signal.SIGKILL)  # in a PID namespace, from its init: every other process in it
        except OSError:
            pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            return
        time.sleep(0.002)
