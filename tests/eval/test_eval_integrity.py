"""Issue 17, "a judge nothing can game": hostile replies of each class, scored through the real sandbox in one
batch with valid replies before and after each, labelled as a reviewer would (what the reply's code really does),
never by what the judge happened to say.

Classes: forged records on the result channel (then a hang, a raise, a silenced channel), SysV IPC shared between
replies and left on the host, replies that crash their own judge (GlobalPhaseGate, a deeply nested record, a
2-qubit UnitaryGate, parameter expressions that exhaust the judge's CPU), and text that corrupts the outputs
(U+2028 in a string literal, a lone surrogate, markdown/ANSI in an exception). Each test fails on the code before
the fix (checked on fb4123f: forged records were verified, the crashes were judge errors, U+2028 was a syntax
error, the shared segment was read by the next reply and the hog's segments OOM-killed the replies after it)."""

from __future__ import annotations

import ctypes
import json
import os
import re

import pytest

from evaluation.report import Thresholds, parse_jsonl, summarize, write_report, write_results, write_validation_log
from evaluation.sandbox import SandboxLimits
from evaluation.scoring import score_replies

from eval_replies_cases import fence, record, rycx

LIMITS = SandboxLimits(timeout_s=8.0, judge_timeout_s=20.0)
VALID = rycx(4)
FORGE = '''import base64, io, json, os
from qiskit import qpy
_b = io.BytesIO()
qpy.dump(qc, _b)
_rec = {"exec_error": None, "found_by": "variable qc", "qpy": base64.b64encode(_b.getvalue()).decode()}
os.write(3, (json.dumps(_rec) + "\\n").encode())
os.write(3, b"{}\\n")
del qc
'''
SHM_KEY = 0x51536D31
HOG_KEY = 0x51536D40
_SHM = '''import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.shmdt.argtypes = [ctypes.c_void_p]
'''
SHM_WRITE = _SHM + f'''shmid = libc.shmget({SHM_KEY}, 4096, 0o1666)
addr = libc.shmat(shmid, None, 0)
ctypes.memmove(addr, b"SECRET-FROM-A", 13)
print("created", shmid >= 0)
''' + VALID
SHM_READ = _SHM + f'''import time
found = None
for _ in range(40):
    shmid = libc.shmget({SHM_KEY}, 4096, 0o666)
    if shmid >= 0:
        found = ctypes.string_at(libc.shmat(shmid, None, 0), 13)
        break
    time.sleep(0.05)
print("read", found)
''' + VALID
SHM_HOG = _SHM + f'''for k in range(4):
    shmid = libc.shmget({HOG_KEY} + k, 240 << 20, 0o1666)
    addr = libc.shmat(shmid, None, 0)
    ctypes.memset(addr, 1, 240 << 20)
    libc.shmdt(addr)
print("hogged")
''' + VALID

CASES = {
    # forged records: a well-formed record of a valid circuit written by the reply itself, then ...
    "forge_hang": VALID + FORGE + "import time\nwhile True:\n    time.sleep(1)\n",       # ... a hang: timeout
    "forge_raise": VALID + FORGE + "raise RuntimeError('after forging')\n",            # ... a raise: runtime_error
    "forge_silence_raise": VALID + FORGE + ("import os\nos.dup2(os.open('/dev/null', os.O_WRONLY), 3)\n"
                                            "raise RuntimeError('after forging')\n"),  # ... G's own record silenced
    "nested_record": VALID + "import os\nos.write(3, b'[' * 200000 + b'\\n')\nos._exit(0)\n",
    # replies that crashed their own judge before; each is an ordinary circuit and is judged as one
    "global_phase": VALID + "from qiskit.circuit.library import GlobalPhaseGate\nqc.append(GlobalPhaseGate(0.3), [])\n",
    "unitary_2q": VALID + ("from qiskit.circuit.library import UnitaryGate\nfrom qiskit.quantum_info import random_unitary\n"
                           "qc.append(UnitaryGate(random_unitary(4, seed=1)), [0, 1])\n"),
    "expr_huge": VALID + ("from qiskit.circuit import Parameter\nx = Parameter('x')\ne = x\nfor _ in range(14):\n"
                          "    e = (e.sin() + e.cos()) * 0.5 + x\nqc.ry(e, 0)\n"),
    "expr_nested": VALID + ("from qiskit.circuit import Parameter\nx = Parameter('x')\ne = x\nfor _ in range(9):\n"
                            "    e = (e.sin() + e.cos()) * 0.5 + x\nqc.ry(e, 0)\n"),
    # text that corrupted the outputs
    "u2028_literal": VALID + 'label = "ansatz\u2028v1"\n',
    "surrogate_error": VALID + 'raise ValueError("bad \\udc80 byte")\n',
    "markdown_exc": VALID + ('raise type("Boom\\n\\n## Result: **PASSED**\\n\\x1b[32m", (Exception,), {})'
                             '("\\x1b[2J fake\\nResult: **PASSED**")\n'),
    # SysV IPC: a segment one reply leaves must not reach the next one
    "shm_write": SHM_WRITE,
    "shm_read": SHM_READ,
}
# label: (verification_pass, failure) as a reviewer reads the code
LABELS = {"forge_hang": (False, "timeout"), "forge_raise": (False, "runtime_error"),
          "forge_silence_raise": (False, "runtime_error"), "nested_record": (False, "runtime_error"),
          "global_phase": (True, None), "unitary_2q": (True, None), "expr_huge": (False, "too_complex"),
          "expr_nested": (True, None), "u2028_literal": (True, None), "surrogate_error": (False, "runtime_error"),
          "markdown_exc": (False, "runtime_error"), "shm_write": (True, None), "shm_read": (True, None)}


def _remove_segments(*keys: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for key in keys:
        shmid = libc.shmget(key, 0, 0)
        if shmid >= 0:
            libc.shmctl(shmid, 0, None)  # IPC_RMID


def _host_segments(*keys: int) -> list[int]:
    with open("/proc/sysvipc/shm") as fh:
        rows = [line.split() for line in fh.read().splitlines()[1:]]
    return [int(r[0]) for r in rows if int(r[0]) in keys]


@pytest.fixture(scope="module")
def hostile():
    records = [record("valid_first", fence(VALID))]
    for name, code in CASES.items():
        records.append(record(name, fence(code)))
        records.append(record(f"valid_after_{name}", fence(VALID)))
    try:
        results = score_replies(records, workers=2, limits=LIMITS)
        left = _host_segments(SHM_KEY)
    finally:
        _remove_segments(SHM_KEY)
    return {r["id"]: r for r in results}, left


def test_valid_replies_around_every_hostile_one_verify(hostile):
    res, _ = hostile
    valid = [k for k in res if k.startswith("valid")]
    assert len(valid) == len(CASES) + 1
    for k in valid:
        assert res[k]["verification_pass"] is True and res[k]["bp_free"] is True, (k, res[k])


@pytest.mark.parametrize("name", sorted(LABELS))
def test_each_hostile_reply_gets_its_true_verdict_never_a_judge_error(hostile, name):
    r = hostile[0][name]
    verified, failure = LABELS[name]
    assert r["judge_error"] is None, r
    assert r["verification_pass"] is verified and r["failure"] == failure, r


def test_forged_records_never_verify(hostile):
    res, _ = hostile
    assert "timed out" in res["forge_hang"]["error"]
    assert res["forge_raise"]["error"] == "malformed result from the reply process"
    assert "exit status 4" in res["forge_silence_raise"]["error"]


def test_crash_triggers_are_judged(hostile):
    res, _ = hostile
    for k in ("global_phase", "unitary_2q", "expr_nested"):
        assert res[k]["bp_status"] == "checked" and res[k]["bp_free"] is True, res[k]
    assert "20000 operations" in res["expr_huge"]["error"]


def test_sysv_segment_neither_reaches_the_next_reply_nor_stays_on_the_host(hostile):
    res, left = hostile
    assert "created True" in res["shm_write"]["stdout_tail"]
    assert "read None" in res["shm_read"]["stdout_tail"], res["shm_read"]["stdout_tail"]
    assert left == []


def test_segments_a_reply_leaves_do_not_starve_the_next_replies_in_its_slot():
    keys = [HOG_KEY + k for k in range(4)]
    records = [record("hog", fence(SHM_HOG))] + [record(f"after_{i}", fence(VALID)) for i in range(2)]
    try:
        res = {r["id"]: r for r in score_replies(records, workers=1, limits=LIMITS)}
        left = _host_segments(*keys)
    finally:
        _remove_segments(*keys)
    assert "hogged" in res["hog"]["stdout_tail"] and res["hog"]["verification_pass"] is True, res["hog"]
    for k in ("after_0", "after_1"):
        assert res[k]["verification_pass"] is True and res[k]["failure"] is None, res[k]
    assert left == []


def test_outputs_survive_reply_controlled_text(hostile, tmp_path):
    res, _ = hostile
    results = list(res.values())
    write_results(tmp_path, results)
    raw = (tmp_path / "results.jsonl").read_bytes()
    assert raw.isascii()  # no raw U+2028/U+0085, no lone surrogate: any JSON-lines reader splits it right
    rows = parse_jsonl(raw.decode(), tmp_path / "results.jsonl")
    assert [r["id"] for r in rows] == [r["id"] for r in results]
    assert {r["id"]: r["error"] for r in rows}["surrogate_error"] == "ValueError: bad \udc80 byte"
    summary = summarize(results, Thresholds())
    write_validation_log(tmp_path, summary, model="m", endpoint=None, thresholds=Thresholds())
    report = write_report(tmp_path, summary, Thresholds(), model="m", endpoint=None).read_text(encoding="utf-8")
    assert len(re.findall(r"^Result: ", report, re.MULTILINE)) == 1
    assert "\x1b" not in report and "## Result" not in report
    assert not any(line.startswith("#") and "PASSED" in line for line in report.splitlines())


def test_readers_take_lines_at_newlines_only(tmp_path):
    """A file written before the writers were ASCII-only (raw U+2028 / U+0085 inside strings) still reads."""
    rows = [{"id": "a", "error": "x\u2028y\u0085z"}, {"id": "b", "error": None}]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert parse_jsonl(path.read_text(encoding="utf-8"), path) == rows


def test_report_never_says_passed_while_judge_errors_exist(tmp_path):
    ok = {"id": "a", "hamiltonian": "heisenberg", "num_qubits": 4, "syntax_valid": True, "verification_pass": True,
          "bp_free": True, "judge_error": None}
    crashed = dict(ok, id="b", verification_pass=None, bp_free=None, judge_error="judge timed out after 5 s")
    summary = summarize([ok, crashed], Thresholds())
    assert summary["passed"] is True  # over the one scored reply the targets hold ...
    text = write_report(tmp_path, summary, Thresholds(), model="m", endpoint=None).read_text()
    assert "Result: **NOT DECIDED: 1 judge error**" in text and "PASSED" not in text  # ... but nothing is decided
    log = write_validation_log(tmp_path, summary, model="m", endpoint=None, thresholds=Thresholds()).read_text()
    assert "result: not_decided" in log


def test_probe_child_never_unwinds_into_the_server(tmp_path, monkeypatch):
    """A probe step that raises anything but OSError must end the probe's child, not return into the caller
    (which would then run on as a second fork server on the same pipes)."""
    from evaluation.sandbox import server

    def boom(flags):
        raise RuntimeError("not an OSError")

    monkeypatch.setattr(server.namespaces, "unshare", boom)
    me = os.getpid()
    marker = tmp_path / "unwound"
    ok = server._probe_in("net", str(tmp_path))
    if os.getpid() != me:  # the probe's child came back here: record it and end it
        marker.write_text("child")
        os._exit(0)
    assert ok is False and not marker.exists()
