"""Issue 14, "errors are not scores": a judge that breaks (timeout, death, supervisor exception, an
exception in verification or in the BP check), an endpoint that refuses a request, an empty
denominator. Each gives an explicit record and exit 2, never a lower rate.

The judge faults are injected with the TEST-ONLY hook cfg["_fault_judge"] (a record's
"_fault_judge", passed on only when QM_SANDBOX_FAULTS=1): the real judge cannot be made to hang or
die on demand. The 4xx comes from the TEST-ONLY fake endpoint (a real vLLM cannot refuse one chosen
request on demand)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from qiskit import QuantumCircuit

from evaluation.report import Thresholds, summarize, write_report
from evaluation.sandbox import SandboxLimits
from evaluation.scoring import score_replies
from quantummind.serving import free_port, wait_for_health

from eval_replies_cases import fence, record, rycx

PY = sys.executable
LIMITS = SandboxLimits(timeout_s=3.0, judge_timeout_s=2.0)  # a hung judge is stopped after 3 + 2 + 5 s
FAULTS = ("raise", "hang", "die", "verify_error", "hang_after_verify", "die_after_verify", "bp_error")


def _reference(n: int = 4) -> QuantumCircuit:
    ns: dict = {}
    exec(rycx(n), ns)  # noqa: S102 - the test's own code: plain qiskit reference
    return ns["qc"]


def _strict_rows(path: Path) -> list[dict]:
    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    return [json.loads(x, parse_constant=no_constants) for x in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    os.environ["QM_SANDBOX_FAULTS"] = "1"
    try:
        recs = [record("before", fence(rycx(4)))]
        recs += [record(f, fence(rycx(4))) | {"_fault_judge": f} for f in FAULTS]
        recs.append(record("after", fence(rycx(4))))
        results = score_replies(recs, workers=2, limits=LIMITS)
    finally:
        os.environ.pop("QM_SANDBOX_FAULTS")
    return {r["id"]: r for r in results}


def test_valid_replies_around_faults_score_normally(faulty):
    ref = _reference()
    for k in ("before", "after"):
        r = faulty[k]
        assert r["verification_pass"] is True and r["bp_free"] is True and r["judge_error"] is None
        assert r["depth"] == ref.depth() and r["num_parameters"] == ref.num_parameters


@pytest.mark.parametrize("fault,reason", [
    ("raise", "sandbox failure: RuntimeError: injected judge fault 'raise'"),
    ("hang", "judge timed out after 5 s"),
    ("die", "judge process died without a result"),
    ("verify_error", "verification failed: RuntimeError: injected judge fault 'verify_error'"),
])
def test_judge_fault_before_verification_decides_nothing(faulty, fault, reason):
    r = faulty[fault]
    assert r["judge_error"] == reason and r["failure"] == "judge_error"
    assert r["verification_pass"] is None and r["bp_free"] is None  # undecided, not "failed"


@pytest.mark.parametrize("fault,reason", [
    ("hang_after_verify", "judge timed out after 5 s"),
    ("die_after_verify", "judge process died without a result"),
    ("bp_error", "barren-plateau check failed: RuntimeError: injected judge fault 'bp_error'"),
])
def test_judge_fault_after_verification_keeps_it(faulty, fault, reason):
    r = faulty[fault]
    ref = _reference()
    assert r["judge_error"] == reason and r["failure"] is None
    assert r["verification_pass"] is True and r["depth"] == ref.depth()  # the verdict reached is kept
    assert r["bp_free"] is None and r["bp_status"] == "judge_error"  # BP undecided, not "not BP-free"


def test_vqe_failure_keeps_the_bp_verdict(monkeypatch):
    monkeypatch.setenv("QM_SANDBOX_FAULTS", "1")
    r = score_replies([record("v", fence(rycx(4))) | {"_fault_judge": "vqe_error"}], workers=1, vqe=True,
                      limits=LIMITS)[0]
    assert r["verification_pass"] is True and r["bp_free"] is True and r["bp_status"] == "checked"
    assert r["judge_error"] == "VQE failed: RuntimeError: injected judge fault 'vqe_error'"
    assert r["energy_error"] is None
    # the seed's verdicts were all reached: the reply stays in the rates, and is still listed
    from evaluation.report import Thresholds, summarize

    s = summarize([r], Thresholds())
    assert (s["num_tests"], s["verification_rate"], s["bp_free_rate"]) == (1, 100.0, 100.0)
    assert [e["id"] for e in s["judge_errors"]] == ["v"]


def test_fault_hook_is_off_without_the_environment_variable():
    assert "QM_SANDBOX_FAULTS" not in os.environ
    r = score_replies([record("x", fence(rycx(4))) | {"_fault_judge": "die"}], workers=1, limits=LIMITS)[0]
    assert r["judge_error"] is None and r["verification_pass"] is True and r["bp_free"] is True


def test_judge_errors_leave_the_rates_and_are_listed(faulty):
    results = list(faulty.values())
    s = summarize(results, Thresholds())
    errors = {e["id"]: e["reason"] for e in s["judge_errors"]}
    assert errors == {k: faulty[k]["judge_error"] for k in FAULTS}
    # only "before" and "after" are scored: both pass everything
    assert s["num_tests"] == 2 and s["num_replies"] == 9
    assert s["syntax_rate"] == s["verification_rate"] == s["bp_free_rate"] == 100.0


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "evaluation", *map(str, args)], capture_output=True, text=True, timeout=300,
                          env=env)


def test_score_exits_2_on_judge_errors_and_rates_are_unchanged(tmp_path):
    good = [record(f"g{i}", fence(rycx(4))) for i in range(2)]
    bad = [record("j_hang", fence(rycx(4))) | {"_fault_judge": "hang"},
           record("j_bp", fence(rycx(4))) | {"_fault_judge": "bp_error"},
           record("j_raise", fence(rycx(4))) | {"_fault_judge": "raise"}]
    env = dict(os.environ, QM_SANDBOX_FAULTS="1")
    flags = ("--no-progress", "--sandbox-timeout", 3, "--judge-timeout", 2)
    clean = _cli("score", _write(tmp_path / "clean.jsonl", good), "--out", tmp_path / "clean", *flags, env=env)
    assert clean.returncode == 0, clean.stderr
    p = _cli("score", _write(tmp_path / "r.jsonl", good + bad), "--out", tmp_path / "o", *flags, env=env)
    assert p.returncode == 2, p.stderr
    assert "3 replies could not be judged" in p.stderr
    for k in ("j_hang", "j_bp", "j_raise"):
        assert f"judge error: {k}: " in p.stderr
    log = yaml.safe_load((tmp_path / "o" / "validation_log.yaml").read_text())
    clean_log = yaml.safe_load((tmp_path / "clean" / "validation_log.yaml").read_text())
    assert [e["id"] for e in log["judge_errors"]] == ["j_hang", "j_bp", "j_raise"]
    assert log["judge_errors"][0]["reason"] == "judge timed out after 5 s"
    assert log["judge_errors"][1]["reason"].startswith("barren-plateau check failed: RuntimeError")
    assert log["num_judge_errors"] == 3 and log["num_tests"] == 2 and log["num_replies"] == 5
    for k in ("syntax_rate", "verification_rate", "bp_free_rate"):
        assert log[k] == clean_log[k] == 100.0  # never a lower rate
    rows = {r["id"]: r for r in _strict_rows(tmp_path / "o" / "results.jsonl")}
    assert rows["j_bp"]["verification_pass"] is True and rows["j_bp"]["bp_status"] == "judge_error"
    report = (tmp_path / "o" / "report.md").read_text()
    assert "3 judge errors" in report and "- j\\_hang: judge timed out after 5 s" in report
    assert "Result: **NOT DECIDED: 3 judge errors**" in report and "PASSED" not in report
    # tolerated when asked: exit by the targets again (without the hang, which costs a judge timeout)
    p = _cli("score", _write(tmp_path / "r2.jsonl", good + bad[1:]), "--out", tmp_path / "o2", *flags,
             "--max-judge-errors", 2, env=env)
    assert p.returncode == 0, p.stderr
    assert "judge error: j_bp: barren-plateau check failed" in p.stderr  # still reported
    p = _cli("score", tmp_path / "r2.jsonl", "--out", tmp_path / "o3", *flags, "--max-judge-errors", 1, env=env)
    assert p.returncode == 2 and "2 replies could not be judged (--max-judge-errors 1)" in p.stderr


def test_empty_denominators_are_null_not_zero(tmp_path):
    results = [{"id": "a", "hamiltonian": "tfim", "num_qubits": 4, "syntax_valid": True, "verification_pass": None,
                "bp_free": None, "constraint_satisfied": None, "judge_error": "judge timed out after 5 s"}]
    s = summarize(results, Thresholds())
    assert s["num_tests"] == 0 and s["passed"] is False
    for k in ("syntax_rate", "verification_rate", "bp_free_rate", "constraint_rate"):
        assert s[k] is None
    assert s["by_hamiltonian"]["tfim"]["verification_rate"] is None
    write_report(tmp_path, s, Thresholds(), model="m", endpoint=None)
    report = (tmp_path / "report.md").read_text()
    assert "| Verification pass | n/a | > 80 | no |" in report and "| tfim | 0 | n/a | n/a | n/a |" in report
    # constraint_rate: no constrained prompt among scored replies -> null, with others scored
    ok = [{"id": "b", "hamiltonian": "tfim", "num_qubits": 4, "syntax_valid": True, "verification_pass": True,
           "bp_free": True, "constraint_satisfied": None}]
    s = summarize(ok, Thresholds())
    assert s["verification_rate"] == 100.0 and s["constraint_rate"] is None


def _fake_run(out: Path, refuse: str, *extra) -> subprocess.CompletedProcess:
    port = free_port()
    env = dict(os.environ, FAKE_REPLY=fence(rycx(4)))
    server = subprocess.Popen([PY, str(Path(__file__).with_name("fake_dying_server.py")), str(port), "100", refuse],
                              env=env)
    try:
        wait_for_health(f"http://127.0.0.1:{port}/v1", timeout_s=20, proc=server)
        return _cli("run", "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "tiny", "--out", out,
                    "--num-tests", 4, "--concurrency", 1, "--max-retries", 0, "--no-progress", *extra)
    finally:
        server.kill()
        server.wait()


def test_refused_request_is_not_scored_and_exits_2(tmp_path):
    """vLLM answers a too-long prompt with HTTP 400: that prompt is a request error, not a syntax failure."""
    out = tmp_path / "run"
    p = _fake_run(out, "2")
    assert p.returncode == 2, p.stderr
    assert "request error: t0001: HTTP 400: request 2: prompt is too long" in p.stderr
    replies = {r["id"]: r for r in _strict_rows(out / "replies.jsonl")}
    assert replies["t0001"]["finish_reason"] == "error" and replies["t0001"]["http_status"] == 400
    log = yaml.safe_load((out / "validation_log.yaml").read_text())
    assert log["request_errors"] == [{"id": "t0001", "reason": "HTTP 400: request 2: prompt is too long"}]
    # the first 4 prompts are all 4-qubit ones: the three answered replies all verify
    assert log["num_tests"] == 3 and log["syntax_rate"] == 100.0 and log["verification_rate"] == 100.0
    rows = {r["id"]: r for r in _strict_rows(out / "results.jsonl")}
    assert rows["t0001"]["syntax_valid"] is None and rows["t0001"]["request_error"].startswith("HTTP 400")
    # --resume sends the refused prompt again (a server that now answers it): all four are scored
    p = _fake_run(out, "", "--resume")
    assert p.returncode == 0, p.stderr
    assert [r["id"] for r in _strict_rows(out / "replies.jsonl")] == ["t0000", "t0001", "t0002", "t0003", "t0001"]
    log = yaml.safe_load((out / "validation_log.yaml").read_text())
    assert log["request_errors"] == [] and log["num_tests"] == 4 and log["verification_rate"] == 100.0
