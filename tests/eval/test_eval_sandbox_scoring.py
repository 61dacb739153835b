"""Verification rules and the sandbox, on hand-written replies scored in ONE run (hostile ones included)."""

import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from evaluation.sandbox import HIDDEN_DIRS, SandboxLimits
from evaluation.scoring import score_replies

from eval_replies_cases import fence, record, rycx

SECRET = "sk-test-SECRET-do-not-leak-123"
WORKERS = 2
SEED = 4242  # appears in this test's fork-server command line, so other sessions' servers are not counted
MARKER = f'"seed": {SEED}'.encode()


def _sandbox_processes(marker: bytes) -> list[int]:
    """Anything forked from the fork server whose command line holds `marker` (they all share it)."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmd = Path(f"/proc/{name}/cmdline").read_bytes()
            except OSError:
                continue
            if b"evaluation.sandbox" in cmd and marker in cmd:
                pids.append(int(name))
    return pids


def _visible_dir() -> Path:
    """This test's folder, unless the checkout itself lies in a directory the sandbox hides
    (a clone under /tmp): then the home directory, which stays visible (but unreadable)."""
    here = Path(__file__).parent
    hidden = any(os.path.commonpath([str(here), d]) == d for d in HIDDEN_DIRS)
    return Path.home() if hidden else here


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """Every case below in a single score_replies call; returns (results by id, context)."""
    os.environ["OPENAI_API_KEY"] = SECRET
    os.environ["VLLM_API_KEY"] = SECRET
    # Outside /tmp (which the sandbox replaces with an empty tmpfs): a directory the reply can see,
    # writable by anyone, so only Landlock can stop the writes and deletes below.
    shared = Path(tempfile.mkdtemp(prefix=".sandbox-target-", dir=_visible_dir()))
    shared.chmod(0o777)
    hidden = tmp_path_factory.mktemp("hidden")
    victim = shared / "victim.txt"
    victim.write_text("keep me")
    victim.chmod(0o666)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    listener.settimeout(0.2)
    accepted: list = []
    stop = threading.Event()

    def accept_loop(sock: socket.socket) -> None:
        while not stop.is_set():
            try:
                accepted.append(sock.accept())
            except OSError:
                pass

    threading.Thread(target=accept_loop, args=(listener,), daemon=True).start()
    port = listener.getsockname()[1]
    unix_path = str(hidden / "agent.sock")
    unix_listener = socket.socket(socket.AF_UNIX)
    unix_listener.bind(unix_path)
    unix_listener.listen(1)
    unix_listener.settimeout(0.2)
    threading.Thread(target=accept_loop, args=(unix_listener,), daemon=True).start()
    # a process holding the key in its environment and command line, as `run --api-key` would
    holder = subprocess.Popen(["sleep", "300", SECRET], env={"OPENAI_API_KEY": SECRET, "PATH": "/usr/bin:/bin"})
    # a secret in the home directory (where credentials live), readable by its owner
    canary = Path.home() / f".qm-canary-{os.getpid()}"
    canary.write_text(SECRET)
    valid = rycx(4)
    too_deep = "from qiskit import QuantumCircuit\nfrom qiskit.circuit import Parameter\nqc = QuantumCircuit(4)\n" \
               "p = Parameter('p')\nfor _ in range(60):\n    qc.ry(p, 0)\n"
    cases = {
        # --- verification rules
        "valid": fence(valid),
        "valid_measured": fence(valid + "qc.measure_all()\n"),
        "wrong_size": fence(rycx(3)),
        "too_deep": fence(too_deep),
        "not_variational": fence("from qiskit import QuantumCircuit\nqc = QuantumCircuit(4)\nqc.h(0)\nfor i in range(3):\n    qc.cx(i, i+1)\n"),
        "removed_execute": fence("from qiskit import QuantumCircuit, execute\n" + valid),
        "several_blocks": "```bash\npip install qiskit\n```\n" + fence("import numpy as np\n") + fence(valid) + fence("print(qc.draw())\n"),
        "library_block": fence("from qiskit.circuit.library import EfficientSU2\nansatz = EfficientSU2(4, reps=2)\n"),
        "function_only": fence("from qiskit import QuantumCircuit\nfrom qiskit.circuit import Parameter\n"
                               "def create_ansatz(num_qubits):\n    c = QuantumCircuit(num_qubits)\n"
                               "    for i in range(num_qubits):\n        c.ry(Parameter(f'x{i}'), i)\n"
                               "    for i in range(num_qubits - 1):\n        c.cx(i, i + 1)\n    return c\n"),
        "syntax_error": fence("def broken(:\n    pass\n"),
        "writes_own_dir": fence("open('notes.txt', 'w').write('ok' * 1000)\n" + valid),
        # --- hostile
        "infinite_loop": fence("while True:\n    pass\n"),
        "sleep_forever": fence("import time\ntime.sleep(10**9)\n"),
        "alloc_64g": fence("x = bytearray(64 * 2**30)\n" + valid),
        "sys_exit": fence("import sys\nsys.exit(3)\n"),
        "sys_exit_after_circuit": fence(valid + "import sys\nsys.exit(0)\n"),
        "os_exit": fence("import os\nos._exit(0)\n"),
        "write_tmp": fence(f"open({str(hidden / 'written.txt')!r}, 'w').write('pwned')\n" + valid),
        "write_outside": fence(f"open({str(shared / 'written.txt')!r}, 'w').write('pwned')\n" + valid),
        "os_system_file": fence(f"import os\nos.system('touch {shared / 'by_system.txt'}')\n" + valid),
        "subprocess_file": fence(f"import subprocess\nsubprocess.run(['touch', {str(shared / 'by_subprocess.txt')!r}])\n" + valid),
        "delete_file": fence(f"import os\nos.remove({str(victim)!r})\n" + valid),
        "import_trick": fence(f"getattr(__import__('o' + 's'), 'sys' + 'tem')('rm -f {victim}')\n"
                              f"__import__('shutil').rmtree({str(shared)!r})\n" + valid),
        "print_200mb": fence("print('x' * 200_000_000)\n" + valid),
        "fork_storm": fence("import os, time\nkids = 0\nfor i in range(300):\n    try:\n        if os.fork() == 0:\n"
                            "            time.sleep(600)\n            os._exit(0)\n        kids += 1\n"
                            "    except OSError:\n        break\nprint('forked', kids)\n" + valid),
        "socket_localhost": fence(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)\n" + valid),
        "unix_socket": fence(f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({unix_path!r})\n" + valid),
        "capabilities": fence("import ctypes\nst = open('/proc/self/status').read()\n"
                              "caps = [l for l in st.splitlines() if l.startswith(('CapEff', 'CapPrm', 'CapBnd'))]\n"
                              "libc = ctypes.CDLL(None, use_errno=True)\n"
                              "rc = libc.umount2(b'/tmp', 2)\n"
                              "raise RuntimeError(repr(caps) + ' umount=' + str(rc))\n"),
        "read_secrets": fence("import os\nraise RuntimeError('ENV=' + repr(dict(os.environ)) + open('/proc/self/environ').read()"
                              ")\n"),
        "read_init_env": fence("raise RuntimeError(open('/proc/1/environ').read())\n"),
        "read_home": fence(f"print(open({str(canary)!r}).read())\n" + valid),
        "read_parent_env": fence(f"raise RuntimeError(open('/proc/{holder.pid}/environ').read())\n"),
        "read_parent_cmdline": fence(f"raise RuntimeError(open('/proc/{holder.pid}/cmdline').read())\n"),
    }
    records = [record(k, v, n=4) for k, v in cases.items()]
    records[0]["constraint"] = "Use only RY and CX gates"
    t0 = time.monotonic()
    results = score_replies(records, workers=WORKERS, limits=SandboxLimits(timeout_s=4.0), seed=SEED)
    elapsed = time.monotonic() - t0
    time.sleep(0.5)
    stop.set()
    ctx = {"shared": shared, "victim": victim, "accepted": accepted, "elapsed": elapsed,
           "leftover_pids": _sandbox_processes(MARKER)}
    listener.close()
    unix_listener.close()
    holder.kill()
    holder.wait()
    yield_value = ({r["id"]: r for r in results}, ctx)
    ctx["shared_listing"] = sorted(p.name for p in shared.iterdir())
    ctx["victim_text"] = victim.read_text() if victim.exists() else None
    ctx["hidden_listing"] = sorted(p.name for p in hidden.iterdir())
    shutil.rmtree(shared)
    canary.unlink()
    os.environ.pop("OPENAI_API_KEY")
    os.environ.pop("VLLM_API_KEY")
    return yield_value


def test_every_reply_scored_in_one_run(scored):
    results, ctx = scored
    assert len(results) == 33
    # the judge decided every reply (no judge error), and a failure kind is given exactly when it did not verify
    for k, r in results.items():
        assert r["judge_error"] is None and (r["failure"] is None) == (r["verification_pass"] is True), (k, r)
    # 2 workers, two 4 s timeouts: the run is bounded, not hung by the hostile cases
    assert ctx["elapsed"] < 60


def test_valid_and_rules(scored):
    r, _ = scored
    v = r["valid"]
    assert v["syntax_valid"] and v["verification_pass"] and v["bp_free"] is True
    assert v["num_qubits_found"] == 4 and v["num_parameters"] == 8 and v["depth"] == 5
    assert v["gate_counts"] == {"cx": 3, "ry": 8} and v["constraint_satisfied"] is True
    assert 0.05 < v["bp_variance"] < 5
    assert r["valid_measured"]["verification_pass"] and r["valid_measured"]["depth"] == 5
    assert r["valid_measured"]["constraint_satisfied"] is None
    assert not r["wrong_size"]["verification_pass"] and "3 qubits, expected 4" in r["wrong_size"]["error"]
    assert r["wrong_size"]["failure"] == "wrong_qubits" and r["too_deep"]["failure"] == "too_deep"
    assert r["not_variational"]["failure"] == "no_parameters" and r["syntax_error"]["failure"] == "syntax_error"
    assert r["wrong_size"]["bp_free"] is None
    assert not r["too_deep"]["verification_pass"] and r["too_deep"]["depth"] == 60
    assert not r["not_variational"]["verification_pass"] and "no free parameters" in r["not_variational"]["error"]
    assert r["removed_execute"]["syntax_valid"] and not r["removed_execute"]["verification_pass"]
    assert "ImportError" in r["removed_execute"]["error"] and "execute" in r["removed_execute"]["error"]
    assert r["several_blocks"]["verification_pass"] and "QuantumCircuit(n)" in r["several_blocks"]["code"]
    lib = r["library_block"]
    assert lib["verification_pass"] and lib["num_parameters"] == 24 and "ry" in lib["gate_counts"]
    assert r["function_only"]["verification_pass"] and r["function_only"]["found_by"] == "call create_ansatz()"
    assert not r["syntax_error"]["syntax_valid"] and r["syntax_error"]["error"].startswith("SyntaxError")
    assert r["writes_own_dir"]["verification_pass"]


def test_timeouts_contained(scored):
    r, _ = scored
    for k in ("infinite_loop", "sleep_forever"):
        assert not r[k]["verification_pass"] and "timed out" in r[k]["error"]


def test_memory_bomb_contained(scored):
    r, _ = scored
    assert not r["alloc_64g"]["verification_pass"] and "MemoryError" in r["alloc_64g"]["error"]


def test_exits_contained(scored):
    r, _ = scored
    assert not r["sys_exit"]["verification_pass"] and r["sys_exit"]["sys_exit"] == "3"
    assert r["sys_exit_after_circuit"]["verification_pass"]
    assert "died without a result" in r["os_exit"]["error"]


def test_filesystem_writes_and_deletes_blocked(scored):
    r, ctx = scored
    assert ctx["shared_listing"] == ["victim.txt"] and ctx["victim_text"] == "keep me"
    assert ctx["hidden_listing"] == ["agent.sock"]
    assert "FileNotFoundError" in r["write_tmp"]["error"]  # host /tmp is not even visible
    # Landlock (PermissionError), a read-only bind (EROFS), or absent: the minimal root holds only the
    # package of a checkout, not this test directory
    denied = ("PermissionError", "Permission denied", "Read-only file system", "No such file or directory")
    assert any(m in r["write_outside"]["error"] for m in denied)
    assert any(m in r["delete_file"]["error"] for m in denied)
    # os.system / subprocess run, but the child process is confined the same way: the file never appears
    for k in ("os_system_file", "subprocess_file"):
        assert r[k]["verification_pass"], r[k]
    assert any(m in r["import_trick"]["error"] for m in denied)


def test_huge_print_capped(scored):
    r, _ = scored
    p = r["print_200mb"]
    assert not p["verification_pass"] and ("File too large" in p["error"] or "OSError" in p["error"])
    assert len(p.get("stdout_tail") or "") <= 2000


def test_fork_storm_contained_and_reaped(scored):
    r, ctx = scored
    assert r["fork_storm"]["syntax_valid"]
    printed = re.search(r"forked (\d+)", r["fork_storm"].get("stdout_tail") or "")
    assert printed, r["fork_storm"]  # the storm ran to its end and reported how many forks succeeded
    assert int(printed.group(1)) < 64  # pids cgroup (or RLIMIT_NPROC for a non-root sandbox uid) binds
    assert ctx["leftover_pids"] == []  # PID-namespace teardown killed every sleeper


def test_no_network(scored):
    r, ctx = scored
    assert not r["socket_localhost"]["verification_pass"]
    err = r["socket_localhost"]["error"]
    assert "PermissionError" in err or "OSError" in err or "unreachable" in err  # Landlock TCP rule or empty netns
    assert "FileNotFoundError" in r["unix_socket"]["error"] or "Permission" in r["unix_socket"]["error"]
    assert ctx["accepted"] == []  # neither the TCP nor the unix-socket listener saw a connection


def test_no_secrets_visible(scored):
    r, _ = scored
    for k in ("read_secrets", "read_parent_env", "read_parent_cmdline", "read_init_env", "read_home"):
        assert r[k]["syntax_valid"] is True, k  # it ran: a failure below is the isolation's, not a typo's
        assert SECRET not in (r[k]["error"] or "") + (r[k].get("stderr_tail") or "") + (r[k].get("stdout_tail") or "")
    assert "ENV={" in r["read_secrets"]["error"]  # it did run and read its (scrubbed) environment
    assert "RuntimeError" in r["read_init_env"]["error"]  # it read /proc/1/environ (its own PID 1) and raised it
    for k in ("read_parent_env", "read_parent_cmdline"):  # own /proc: host processes are not there
        assert re.match(r"(FileNotFoundError|PermissionError): .*/proc/\d+/", r[k]["error"]), r[k]["error"]
    # the canary exists on the host (the fixture wrote it), so a FileNotFoundError means it is hidden
    assert re.match(r"(FileNotFoundError|PermissionError): .*\.qm-canary-", r["read_home"]["error"]), r["read_home"]


def test_score_reply_single():
    from evaluation.scoring import score_reply

    res = score_reply(record("x", fence(rycx(6)), n=6, ham="tfim", constraint="Include entangling layers"))
    assert res["verification_pass"] and res["constraint_satisfied"] is True and res["bp_free"] is True


def test_no_capabilities_even_as_root(scored):
    r, _ = scored
    err = r["capabilities"]["error"]
    assert "CapEff:\\t0000000000000000" in err and "CapBnd:\\t0000000000000000" in err, err
    assert "umount=-1" in err  # cannot unhide the host's /tmp


def test_interrupted_scoring_leaves_nothing_and_stale_leftovers_are_removed(tmp_path):
    """Ctrl-C mid-scoring stops the sandboxes at once; dirs of a SIGKILLed server are cleaned next time."""
    import signal as _signal

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = Path(tempfile.gettempdir()) / f"qm-sandbox-{dead.pid}-stale"
    stale.mkdir()
    recs = [record(str(i), fence("import time\ntime.sleep(100)\n")) for i in range(4)]
    interrupted_at: list[float] = []

    marker = f'"seed": {SEED + 1}'.encode()

    def interrupt_once_replies_run() -> None:
        # Ctrl-C while replies run (this server and at least one supervisor + reply process, all forks
        # with the server's command line), however long the server took to start
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(_sandbox_processes(marker)) < 3:
            time.sleep(0.05)
        time.sleep(0.5)  # the replies are in their sleep
        interrupted_at.append(time.monotonic())
        os.kill(os.getpid(), _signal.SIGINT)

    threading.Thread(target=interrupt_once_replies_run, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        score_replies(recs, workers=2, seed=SEED + 1)
    assert interrupted_at and time.monotonic() - interrupted_at[0] < 10  # stopped at once, not after 100 s
    assert not stale.exists()
    time.sleep(0.5)
    assert _sandbox_processes(marker) == []
    assert not [n for n in os.listdir(tempfile.gettempdir()) if n.startswith("qm-sandbox-") and
                not _alive(int(n.split("-")[2]))]


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()
