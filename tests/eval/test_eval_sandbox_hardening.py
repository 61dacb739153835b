"""Issue 10's sandbox holes and issue 14's fail-closed isolation, each closed and tested.

Every hostile reply is scored in one batch with valid replies before and after it; each valid one
must still verify. Host-side effects (files, sockets, memory, processes) are checked from here, with
the host's own tools, not with the sandbox's code.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from eval_replies_cases import fence, record, rycx
from evaluation.sandbox import SANDBOX_UID_BASE, SandboxLimits, probe_isolation, run_jobs
from evaluation.scoring import score_replies

VALID = rycx(4)
SEED = 5151  # in this file's fork-server command lines only
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="namespaces, cgroups and the uid drop need root")

# Devices that exist on hosts like this one and that uid 0 could read without a reduced /dev.
HOST_DEVICES = ("/dev/mem", "/dev/kmsg", "/dev/port", "/dev/vda", "/dev/sda", "/dev/console", "/dev/vsock")


@pytest.fixture(scope="module")
def iso() -> dict:
    return asdict(probe_isolation())




class _UnixListener:
    """A pathname unix-socket listener that records every connection it accepts."""

    def __init__(self, directory: Path):
        self.path = str(directory / "agent.sock")
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(self.path)
        self.sock.listen(5)
        self.sock.settimeout(0.2)
        self.accepted: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.accepted.append(self.sock.accept())
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def _sandbox_uid_processes(seed: int = SEED) -> list[int]:
    """Host processes owned by a sandbox uid, forked from a server of this file (none may outlive a run)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            status = Path(f"/proc/{name}/status").read_text()
            if f'"seed": {seed}'.encode() not in Path(f"/proc/{name}/cmdline").read_bytes():
                continue
        except OSError:
            continue
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        if SANDBOX_UID_BASE <= uid < SANDBOX_UID_BASE + 64:
            pids.append(int(name))
    return pids


def _processes_with(arg: bytes) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if arg in Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0"):
                    pids.append(int(name))
            except OSError:
                pass
    return pids


# ------------------------------------------------------------------------- one batch of hostile replies

CANARY_XATTR = "user.qm_canary"
LEFTOVER_SLEEP = "987.654"  # a grandchild that tries to outlive the kill runs `sleep 987.654`


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """The hostile replies (and valid ones around each) scored in ONE score_replies call."""
    # A directory on the import path (PYTHONPATH) is bound into the reply's view, read-only: the
    # worst place for a host file or socket, since the reply can name and reach it.
    visible = Path(tempfile.mkdtemp(prefix="qm-hardening-visible-", dir="/var/lib" if os.access("/var/lib", os.W_OK)
                                    else None))
    old_pythonpath = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(visible), old_pythonpath]))
    canary = visible / "canary.bin"
    canary.write_bytes(b"host file")
    canary.chmod(0o644)
    os.utime(canary, (1_000_000_000, 1_000_000_000))
    try:
        os.setxattr(canary, CANARY_XATTR, b"original")
        has_xattr = True
    except OSError:
        has_xattr = False
    before = canary.stat()
    outside = Path(tempfile.mkdtemp(prefix="qm-hardening-", dir="/var/lib" if os.access("/var/lib", os.W_OK) else None))
    listeners = [_UnixListener(visible), _UnixListener(outside)]
    metadata = f"""import os
errs = [os.stat({str(canary)!r}).st_size]  # it can see the file
for name, call in [("chmod", lambda: os.chmod({str(canary)!r}, 0o4777)),
                   ("utime", lambda: os.utime({str(canary)!r}, (0, 0))),
                   ("setxattr", lambda: os.setxattr({str(canary)!r}, "user.qm_canary", b"pwned")),
                   ("removexattr", lambda: os.removexattr({str(canary)!r}, "user.qm_canary")),
                   ("chown", lambda: os.chown({str(canary)!r}, 65534, 65534))]:
    try:
        call()
        errs.append(name + " ok")
    except OSError as e:
        errs.append(name + " " + type(e).__name__)
print(errs)
""" + VALID
    paths = [lst.path for lst in listeners]
    unix = f"import os, socket\nres = [os.path.exists({paths[0]!r})]\nfor p in {paths!r}:\n" + """    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(p)
        s.sendall(b"hello")
        res.append("connected")
    except OSError as e:
        res.append(type(e).__name__)
print(res)
""" + VALID
    families = """import socket
res = {}
for fam in ("AF_VSOCK", "AF_PACKET", "AF_NETLINK"):
    try:
        socket.socket(getattr(socket, fam), socket.SOCK_DGRAM if fam != "AF_VSOCK" else socket.SOCK_STREAM).close()
        res[fam] = "created"
    except OSError as e:
        res[fam] = type(e).__name__
print(res)
""" + VALID
    devices = f"""import os
print(sorted(os.listdir("/dev")))
res = {{}}
for p in {list(HOST_DEVICES) + ["/proc/kcore", "/proc/kmsg", "/sys/fs/cgroup/memory/cgroup.procs"]!r}:
    try:
        with open(p, "rb") as fh:
            fh.read(16)
        res[p] = "read"
    except OSError as e:
        res[p] = type(e).__name__
print(res)
""" + VALID
    # kernel interfaces a reply has no use for (seccomp: EPERM / ENOSYS), and ways out of its cgroup
    holder = subprocess.Popen(["sleep", "300"])
    syscalls = f"HOLDER = {holder.pid}\nCANARY = {str(canary).encode()!r}\n" + """import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def call(*a):
    r = libc.syscall(*[ctypes.c_long(x) for x in a])
    return -ctypes.get_errno() if r < 0 else r
res = {
    "ptrace_traceme": call(101, 0, 0, 0, 0),
    "keyctl_user_keyring": call(250, 0, -4, 0),      # KEYCTL_GET_KEYRING_ID of @u
    "io_uring_setup": call(425, 8, ctypes.addressof(ctypes.create_string_buffer(120))),
    "unshare_user": call(272, 0x10000000),
    "mount_tmpfs": libc.mount(b"x", b"/proc", b"tmpfs", 0, None) and -ctypes.get_errno(),
    "bpf": call(321, 0, 0, 0),
    "userfaultfd": call(323, 0),
    "chroot": libc.chroot(b"/usr") and -ctypes.get_errno(),
    "x32_chmod": call(0x40000000 | 90, ctypes.addressof(ctypes.create_string_buffer(CANARY)), 0o4777),
    "sched_fifo": libc.sched_setscheduler(0, 1, ctypes.byref(ctypes.c_int(1))) and -ctypes.get_errno(),
}
try:
    os.kill(HOLDER, 9)  # a host process, by its host pid
    res["kill_host"] = "sent"
except OSError as e:
    res["kill_host"] = type(e).__name__
for path in ("/sys/fs/cgroup/memory/cgroup.procs", "/sys/fs/cgroup/cgroup.procs", "/proc/1/root/etc/shadow"):
    try:
        with open(path, "w") as fh:
            fh.write("0")
        res[path] = "written"
    except OSError as e:
        res[path] = type(e).__name__
try:
    with open("/proc/self/mem", "r+b") as fh:  # writing its own memory: harmless, stays in its process
        res["self_mem"] = "opened"
except OSError as e:
    res["self_mem"] = type(e).__name__
print(res)
""" + VALID if os.uname().machine == "x86_64" else VALID
    escape_kill = f"""import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv("/bin/sleep", ["sleep", "{LEFTOVER_SLEEP}"])
    os._exit(0)
time.sleep(0.5)
print("double-forked")
""" + VALID
    # a credential change (the uid drop) clears the parent-death signal: G must have re-armed it
    pdeathsig = ("import ctypes\nv = ctypes.c_int(-1)\nctypes.CDLL(None).prctl(2, ctypes.byref(v), 0, 0, 0)\n"
                 "print(v.value)\n") + VALID
    checkout = Path(__file__).resolve().parents[2]
    tree = (f"import os\nprint([os.path.exists({str(checkout / 'evaluation' / 'sandbox' / '__init__.py')!r}), "
            f"os.path.exists({str(checkout / 'README.md')!r}), os.path.exists({str(checkout / '.git')!r})])\n") + VALID
    cases = {"metadata": metadata, "pdeathsig": pdeathsig, "checkout_tree": tree, "unix_sockets": unix,
             "socket_families": families, "devices": devices,
             "escape_kill": escape_kill}
    if os.uname().machine == "x86_64":
        cases["syscalls"] = syscalls
    records = [record("valid_first", fence(VALID))]
    for name, code in cases.items():
        records.append(record(name, fence(code)))
        records.append(record(f"valid_after_{name}", fence(VALID)))
    try:
        results = score_replies(records, workers=2, limits=SandboxLimits(timeout_s=8.0), seed=SEED)
    finally:
        if old_pythonpath is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_pythonpath
    time.sleep(0.3)
    after = canary.stat()
    ctx = {"before": before, "after": after, "has_xattr": has_xattr,
           "xattr": os.getxattr(canary, CANARY_XATTR) if has_xattr else None,
           "accepted": [len(lst.accepted) for lst in listeners],
           "leftover_sleep": _processes_with(LEFTOVER_SLEEP.encode()),
           "sandbox_uid_processes": _sandbox_uid_processes(), "cases": list(cases),
           "holder_alive": holder.poll() is None}
    holder.kill()
    holder.wait()
    for lst in listeners:
        lst.close()
    for pid in ctx["leftover_sleep"]:  # never leave one behind, even when the test fails
        os.kill(pid, 9)
    shutil.rmtree(visible, ignore_errors=True)
    shutil.rmtree(outside, ignore_errors=True)
    return {r["id"]: r for r in results}, ctx


def _printed(result: dict):
    """The first line the reply printed, parsed back as a Python literal."""
    return ast.literal_eval((result.get("stdout_tail") or "").strip().splitlines()[0])


def test_valid_replies_around_every_hostile_one_still_verify(batch):
    r, ctx = batch
    for rid in ["valid_first"] + [f"valid_after_{c}" for c in ctx["cases"]]:
        assert r[rid]["verification_pass"] is True and r[rid]["bp_free"] is True, (rid, r[rid]["error"])


@needs_root
def test_host_file_metadata_unchanged(batch):
    r, ctx = batch
    tried = _printed(r["metadata"])
    assert tried[0] == len(b"host file"), tried  # visible to the reply (bound read-only)...
    assert len(tried) == 6 and not any(str(t).endswith(" ok") for t in tried), tried  # ...but not changeable
    b, a = ctx["before"], ctx["after"]
    assert (a.st_mode, a.st_mtime_ns, a.st_uid, a.st_gid) == (b.st_mode, b.st_mtime_ns, b.st_uid, b.st_gid)
    if ctx["has_xattr"]:
        assert ctx["xattr"] == b"original"
    assert r["metadata"]["verification_pass"] is True  # the reply ran to the end: each call was refused


@needs_root
def test_pathname_unix_sockets_unreachable(batch):
    r, ctx = batch
    tried = _printed(r["unix_sockets"])
    # the first socket lies in a directory the reply sees: only the seccomp rule on socket(AF_UNIX) stops it
    assert tried[0] is True and len(tried) == 3 and "connected" not in tried, tried
    assert ctx["accepted"] == [0, 0]  # neither listener (visible dir, dir outside the view) saw a connection


@needs_root
def test_vsock_packet_netlink_sockets_cannot_be_created(batch):
    r, _ = batch
    assert _printed(r["socket_families"]) == {"AF_VSOCK": "PermissionError", "AF_PACKET": "PermissionError",
                                              "AF_NETLINK": "PermissionError"}


@needs_root
def test_dev_reduced_and_host_devices_unreadable(batch):
    r, _ = batch
    lines = (r["devices"]["stdout_tail"] or "").strip().splitlines()
    listing, reads = ast.literal_eval(lines[0]), ast.literal_eval(lines[1])
    assert set(listing) <= {"null", "zero", "random", "urandom", "fd", "stdin", "stdout", "stderr"}, listing
    assert {"null", "zero", "random", "urandom"} <= set(listing)
    assert [p for p in HOST_DEVICES if os.path.exists(p)], "this host has none of the devices to hide"
    assert "read" not in reads.values(), reads


@needs_root
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the attack uses x86_64 syscall numbers")
def test_kernel_interfaces_and_cgroup_escape_denied(batch):
    r, ctx = batch
    res = _printed(r["syscalls"])
    eperm, enosys = -1, -38
    # x32_chmod: the x32 ABI's chmod (another syscall table) on the host canary; sched_fifo: a realtime
    # spinner would starve every CPU whatever the cgroup quota
    for key in ("ptrace_traceme", "keyctl_user_keyring", "io_uring_setup", "unshare_user", "mount_tmpfs", "bpf",
                "userfaultfd", "chroot", "x32_chmod", "sched_fifo"):
        assert res[key] in (eperm, enosys), (key, res[key])
    assert res["kill_host"] == "ProcessLookupError" and ctx["holder_alive"]  # own PID namespace
    for path in ("/sys/fs/cgroup/memory/cgroup.procs", "/sys/fs/cgroup/cgroup.procs", "/proc/1/root/etc/shadow"):
        assert res[path] != "written", path
    assert r["syscalls"]["verification_pass"] is True


@needs_root
def test_double_forked_session_leader_does_not_outlive_the_kill(batch):
    r, ctx = batch
    assert "double-forked" in (r["escape_kill"]["stdout_tail"] or "")
    assert ctx["leftover_sleep"] == [] and ctx["sandbox_uid_processes"] == []


@needs_root
def test_checkout_contributes_only_the_package(batch):
    """A developer's checkout on PYTHONPATH may hold .env files and credentials in .git: the reply sees
    the package it needs, not the rest of the tree."""
    r, _ = batch
    checkout = Path(__file__).resolve().parents[2]
    assert (checkout / "README.md").exists()
    assert _printed(r["checkout_tree"]) == [True, False, False]


@needs_root
def test_reply_dies_with_its_supervisor_after_the_uid_drop(batch):
    r, _ = batch
    assert _printed(r["pdeathsig"]) == 9  # SIGKILL


@needs_root
def test_interrupted_scoring_leaves_no_sandbox_uid_process():
    """Ctrl-C while replies run as the sandbox uid: the server kills its slots' cgroups empty, and each
    reply dies with its supervisor (parent-death signal re-armed after the uid drop)."""
    import signal as _signal

    seed = SEED + 7
    seen = threading.Event()

    def watch() -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60 and not _sandbox_uid_processes(seed):
            time.sleep(0.01)
        seen.set()
        os.kill(os.getpid(), _signal.SIGINT)

    threading.Thread(target=watch, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        score_replies([record(str(i), fence("import time\ntime.sleep(100)\n")) for i in range(2)], workers=2,
                      seed=seed, limits=SandboxLimits(timeout_s=90.0))
    assert seen.is_set()
    time.sleep(1.0)
    assert _sandbox_uid_processes(seed) == []


@needs_root
def test_isolation_recorded(iso):
    # this host (root, Landlock, cgroup v1 with memory and cpu): every layer is in force
    assert iso["minimal_root"] and iso["seccomp"] and iso["uid_drop"] and iso["env_allowlist"] and iso["fail_closed"]
    assert iso["seccomp_arch"] == os.uname().machine
    if iso["cgroup_version"]:
        assert iso["memory_cgroup"] and iso["cpu_cgroup"] and iso["memory_limit_bytes"] > SandboxLimits().memory_bytes


# ------------------------------------------------------------------------- secrets in unmarked variables

CANARY = "canary-7f3a9c1e"


def test_unmarked_secret_reaches_no_output_file(tmp_path):
    """DATABASE_URL / SENTRY_DSN carry no KEY/TOKEN marker; an allow-list keeps them out anyway."""
    thief = """import os
found = []
for path in ("/proc/self/environ", "/proc/1/environ"):
    try:
        found.append(open(path, "rb").read().decode("utf-8", "replace"))
    except OSError as e:
        found.append(path + " " + type(e).__name__)
found.append(repr(dict(os.environ)))
text = " | ".join(found)
print(text)
import sys
print(text, file=sys.stderr)
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter, Gate
qc = QuantumCircuit(4)
for i in range(4):
    qc.ry(Parameter(f"t{i}"), i)
qc.append(Gate(("g" + text)[:60].replace(" ", "_"), 1, []), [0])
raise type("E" + str(len(text)), (Exception,), {})(text)
"""
    recs = [record("valid_first", fence(VALID)), record("thief", fence(thief)), record("valid_last", fence(VALID))]
    replies = tmp_path / "replies.jsonl"
    replies.write_text("".join(json.dumps(r) + "\n" for r in recs))
    env = dict(os.environ, DATABASE_URL=f"postgres://user:{CANARY}@127.0.0.1/db",
               SENTRY_DSN=f"https://{CANARY}@127.0.0.1/1", MY_PLAIN_VAR=CANARY)
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "evaluation", "score", str(replies), "--out", str(out), "--no-progress"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode in (0, 1), p.stderr
    rows = {json.loads(line)["id"]: json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()}
    assert rows["valid_first"]["verification_pass"] and rows["valid_last"]["verification_pass"]
    # it did run and read the fork server's environment block (only that one holds PYTHONPATH=)
    assert "PYTHONPATH=" in (rows["thief"]["stdout_tail"] or ""), rows["thief"]
    for name in ("results.jsonl", "validation_log.yaml", "report.md"):
        assert CANARY not in (out / name).read_text(), name
    assert CANARY not in p.stdout + p.stderr
    log = yaml.safe_load((out / "validation_log.yaml").read_text())
    assert log["sandbox_isolation"]["env_allowlist"] is True


# ------------------------------------------------------------------------- per-slot memory and CPU

def _job(i: int, code: str) -> dict:
    return {"id": i, "kind": "circuit", "code": code, "num_qubits": 4, "hamiltonian": "heisenberg", "constraint": "",
            "vqe": False}


def _cfg(limits: SandboxLimits, workers: int = 2, seed: int = SEED) -> dict:
    return {"workers": workers, "limits": asdict(limits), "bp_samples": 10, "seed": seed}


MEMORY_HOG = """import os, time
MB = 1 << 20
r, w = os.pipe()
kids = []
for i in range(6):
    pid = os.fork()
    if pid == 0:
        if i == 0:  # memfd pages, written, not mapped: memory RLIMIT_AS never sees (each under RLIMIT_FSIZE)
            fds = []
            for _ in range(20):
                fd = os.memfd_create("hog")
                for _ in range(12):
                    os.write(fd, b"x" * MB)
                fds.append(fd)
        else:       # each child stays under the per-process address-space limit
            b = bytearray(150 * MB)
        os.write(w, b"1")
        time.sleep(60)
        os._exit(0)
    kids.append(pid)
os.close(w)
os.set_blocking(r, False)
done, dead, t0 = 0, set(), time.monotonic()
while done + len(dead) < len(kids) and time.monotonic() - t0 < 40:
    time.sleep(0.2)
    try:
        done += len(os.read(r, 64))
    except BlockingIOError:
        pass
    for pid in kids:
        if pid not in dead and os.waitpid(pid, os.WNOHANG)[0]:
            dead.add(pid)
print("allocated", done, "killed", len(dead), flush=True)
"""
HOG_TRIED = (5 * 150 + 20 * 12) << 20


@needs_root
def test_memory_across_processes_capped_per_slot(iso):
    if not iso["memory_cgroup"]:
        pytest.skip("no memory cgroup on this host")
    # a small budget: first-touch page faults are slow on a VM, and the cap is what is tested
    limits = SandboxLimits(timeout_s=50.0, memory_bytes=256 << 20)
    jobs = [_job(0, VALID), _job(1, MEMORY_HOG + VALID), _job(2, VALID)]
    info: dict = {}
    res = dict(run_jobs(jobs, _cfg(limits, workers=1), info=info))
    assert res[0]["verification_pass"] and res[2]["verification_pass"], (res[0], res[2])
    hog = res[1]
    budget = info["memory_limit_bytes"]
    assert budget < limits.memory_bytes + (512 << 20)
    assert HOG_TRIED > 1.5 * budget  # without a cap the host would have seen this much
    assert hog["memory_peak_bytes"] <= budget, (hog["memory_peak_bytes"], budget)
    assert hog["memory_peak_bytes"] > 0.8 * budget  # it did reach the cap (the hog really allocated)
    # the OOM killer stopped some of its processes (or the reply process itself)
    printed = (hog.get("stdout_tail") or "").split()
    killed = printed[:1] == ["allocated"] and int(printed[3]) > 0
    assert killed or "died without a result" in (hog["error"] or ""), hog


SPINNERS = """import os, sys, time
n = 0
for _ in range(20):
    try:
        if os.fork() == 0:
            os.setsid()
            while True:
                pass
        n += 1
    except OSError:
        break
print("spinners", n, flush=True)
time.sleep(600)
"""
CPU_BOUND_VALID = "import time\nwhile time.process_time() < 1.0:\n    pass\n" + VALID


@needs_root
def test_spinning_neighbour_does_not_starve_the_other_slot(iso):
    if not iso["cpu_cgroup"]:
        pytest.skip("no cpu cgroup on this host")
    limits = SandboxLimits(timeout_s=8.0)
    # slot 0 takes the spinner; slot 1 scores the CPU-bound valid replies meanwhile
    jobs = [_job(0, SPINNERS), _job(1, CPU_BOUND_VALID), _job(2, CPU_BOUND_VALID), _job(3, CPU_BOUND_VALID)]
    res = dict(run_jobs(jobs, _cfg(limits, workers=2)))
    assert "spinners" in (res[0].get("stdout_tail") or "") and int(res[0]["stdout_tail"].split()[1]) == 20, res[0]
    assert res[0]["failure"] == "timeout"
    for i in (1, 2, 3):  # each needs 1 s of CPU: without a per-slot cap it would get ~2/21 of a core (10 s)
        assert res[i]["verification_pass"], (i, res[i]["error"], res[i].get("exec_seconds"))
    time.sleep(0.3)
    assert _sandbox_uid_processes() == []


# ------------------------------------------------------------------------- fail closed (issue 14)

G_STEPS = ("memory_cgroup", "own_proc", "uid_drop", "landlock", "rlimits", "capabilities", "seccomp")
I_STEPS = ("pids_cgroup", "cpu_cgroup", "net_namespace", "mount_namespace", "minimal_root", "pid_namespace")
JUDGE_STEPS = ("judge_capabilities", "judge_uid_drop", "judge_landlock", "judge_seccomp")
RAN = "print('REPLY-RAN')\n" + VALID


@needs_root
def test_isolation_failure_for_one_reply_fails_closed(monkeypatch):
    monkeypatch.setenv("QM_SANDBOX_FAULTS", "1")
    steps = G_STEPS + I_STEPS + JUDGE_STEPS
    jobs = [_job(0, RAN)]
    for i, step in enumerate(steps, start=1):
        jobs.append(_job(2 * i - 1, RAN) | {"_fault": step})
        jobs.append(_job(2 * i, RAN))
    res = dict(run_jobs(jobs, _cfg(SandboxLimits(timeout_s=6.0))))
    for i, step in enumerate(steps, start=1):
        bad, good = res[2 * i - 1], res[2 * i]
        assert good["verification_pass"], (step, good["error"])
        # no verdict on the reply (verification_pass null), never a failure of it
        assert bad["failure"] == "judge_error" and bad["verification_pass"] is None, (step, bad)
        assert bad["judge_error"] == bad["error"], (step, bad)
        assert bad["error"].startswith(f"isolation failed: {step}:"), (step, bad["error"])
        if step in JUDGE_STEPS:  # the reply ran, but no judge ran on it less isolated than logged
            assert "REPLY-RAN" in (bad.get("stdout_tail") or "")
        else:  # the reply never ran
            assert "REPLY-RAN" not in (bad.get("stdout_tail") or ""), step


def test_fault_knob_is_ignored_without_the_test_switch(monkeypatch):
    monkeypatch.delenv("QM_SANDBOX_FAULTS", raising=False)
    res = dict(run_jobs([_job(0, VALID) | {"_fault": "landlock"}], _cfg(SandboxLimits(), workers=1)))
    assert res[0]["verification_pass"], res[0]


def test_real_replies_still_work_under_the_filter():
    """The seccomp filter and the minimal root must not break what real replies do: draw the circuit
    with matplotlib into a file of the work dir, simulate it with Aer, use a multiprocessing pipe."""
    code = VALID + """import os
qc.draw("mpl").savefig("circuit.png")
from qiskit import transpile
from qiskit_aer import AerSimulator
bound = qc.assign_parameters([0.0] * qc.num_parameters)
bound.measure_all()
sim = AerSimulator()
counts = sim.run(transpile(bound, sim), shots=64, seed_simulator=1).result().get_counts()
import multiprocessing
a, b = multiprocessing.Pipe()
a.send("piped")
print(os.path.getsize("circuit.png") > 1000, counts, b.recv())
"""
    res = score_replies([record("real", fence(code)), record("valid", fence(VALID))], workers=2,
                        limits=SandboxLimits(timeout_s=60.0))
    assert res[0]["verification_pass"], (res[0]["error"], res[0]["stderr_tail"])
    # all angles 0: RY(0) is the identity, so Aer must see |0000> every time (an independent expectation)
    assert res[0]["stdout_tail"].strip() == "True {'0000': 64} piped", res[0]["stdout_tail"]
    assert res[1]["verification_pass"]
