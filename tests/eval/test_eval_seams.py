"""Where the judges, the runner and the reports meet: behaviours that only hold when the pieces agree.

- A rebuild at larger sizes (BP scaling) that runs out of its time box must not turn a verified reply into a
  timeout: the prompt-size circuit is judged, the rebuild is reported as not done. A function that defeats
  the time box (it swallows the alarm and never returns) keeps the reply process from ending: a timeout,
  since a record written before a hang is never a verdict (issue 17).
- A fallback fence that is judged is the one rebuilt, not the whole answer that failed.
- HumanEval: a refused request is not scored (exit 2, listed); a refusal that --resume replaced is gone;
  a judge error is no verdict in compare's per-task pass@1 either.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from eval_replies_cases import fence, record
from evaluation.comparison import per_task_pass_at_1
from evaluation.humaneval.tasks import tasks_by_id
from evaluation.sandbox import SandboxLimits
from evaluation.scoring import score_replies

RYCX = """from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector

def build_ansatz(n):
{guard}    t = ParameterVector("t", n)
    qc = QuantumCircuit(n)
    for i in range(n):
        qc.ry(t[i], i)
    for i in range(n - 1):
        qc.cx(i, i + 1)
    return qc
"""
# At any size but the prompt's, the function sleeps past the rebuild's time box (an ordinary slow function) ...
SLOW = """    import time
    while n != 4:
        time.sleep(100)
"""
# ... or swallows the time box's alarm and never returns (it defeats the judge's time box).
STUCK = """    import time
    while n != 4:
        try:
            time.sleep(100)
        except BaseException:
            pass
"""


def test_a_rebuild_that_runs_out_of_time_keeps_the_verified_prompt_circuit():
    slow = record("slow", fence(RYCX.format(guard=SLOW)), n=4)
    stuck = record("stuck", fence(RYCX.format(guard=STUCK)), n=4)
    fine = record("fine", fence(RYCX.format(guard="")), n=4)
    res = {r["id"]: r for r in score_replies([fine, slow, stuck, fine | {"id": "fine2"}], workers=2,
                                             limits=SandboxLimits(timeout_s=8.0))}
    for rid in ("fine", "fine2"):  # the same ansatz, rebuilt: decided by its scaling
        assert res[rid]["verification_pass"] is True and res[rid]["bp_basis"] == "scaling", res[rid]
        assert [p["num_qubits"] for p in res[rid]["bp_scaling"]] == [4, 6, 8]
    r = res["slow"]
    assert r["verification_pass"] is True and r["failure"] is None, r  # not a timeout of the reply
    assert r["bp_basis"] == "undecided" and r["bp_free"] is None  # one size below 8: undecided, not BP-free
    assert r["bp_rebuild"] == "failed"  # visible, not only a note
    assert "rebuild ran past" in (r.get("bp_scaling_note") or ""), r
    r = res["stuck"]
    assert r["verification_pass"] is False and r["failure"] == "timeout", r


def test_the_judged_fallback_fence_is_the_one_rebuilt():
    # fence 1 defines build_ansatz(n); fence 2 calls a helper that does not exist (the whole answer fails)
    broken = "circuit = build_ansatz(4)\nresult = run_on_hardware(circuit)\n"
    reply = ("Here is the ansatz:\n\n" + fence(RYCX.format(guard="")) + "\nUsage:\n\n" + fence(broken))
    r = score_replies([record("fb", reply, n=4)], workers=1, limits=SandboxLimits(timeout_s=10.0))[0]
    assert r["fallback"] == 0 and r["verification_pass"] is True, r
    assert r["found_by"] == "call build_ansatz()"
    assert r["bp_basis"] == "scaling" and [p["num_qubits"] for p in r["bp_scaling"]] == [4, 6, 8], r


def _humaneval_score(tmp_path: Path, rows: list[dict]) -> tuple[subprocess.CompletedProcess, Path]:
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "evaluation", "humaneval", "score", str(samples), "--out", str(out),
                        "--no-progress"], capture_output=True, text=True, timeout=600)
    return p, out


def test_humaneval_refused_requests_are_not_scored_and_exit_2(tmp_path):
    task = "qiskitHumanEval/0"
    body = tasks_by_id("normal")[task].canonical_solution
    rows = [
        {"task_id": task, "sample": 0, "completion": body, "finish_reason": "stop"},
        # refused, then resent by --resume and answered: only the answer counts
        {"task_id": task, "sample": 1, "completion": "", "finish_reason": "error", "error": "HTTP 400: bad"},
        {"task_id": task, "sample": 1, "completion": body, "finish_reason": "stop"},
        # refused and never resent: not scored at all
        {"task_id": task, "sample": 2, "completion": "", "finish_reason": "error", "error": "HTTP 400: too long"},
    ]
    p, out = _humaneval_score(tmp_path, rows)
    assert p.returncode == 2, p.stderr
    assert "1 requests were refused" in p.stderr and "HTTP 400: too long" in p.stderr
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["sample"], r["passed"]) for r in results] == [(0, True), (1, True)]
    log = yaml.safe_load((out / "humaneval_log.yaml").read_text())
    assert log["pass_at"] == {1: 100.0} and log["num_samples"] == 2
    assert log["request_errors"] == [{"task_id": task, "sample": 2, "reason": "HTTP 400: too long"}]


def test_compare_per_task_pass_at_1_leaves_judge_errors_out(tmp_path):
    rows = [{"task_id": "a", "sample": 0, "passed": True, "failure": None},
            {"task_id": "a", "sample": 1, "passed": False, "failure": "judge_error"},
            {"task_id": "b", "sample": 0, "passed": False, "failure": "judge_error"},
            {"task_id": "c", "sample": 0, "passed": False, "failure": "assertion"},
            {"task_id": "c", "sample": 1, "passed": True, "failure": None}]
    # a: 1 of 1 judged sample passes (not 1 of 2); b: no judged sample, no task; c: 1 of 2
    assert per_task_pass_at_1(rows, tmp_path / "results.jsonl") == {"a": 100.0, "c": 50.0}
