"""`python -m evaluation score` and `compare` on saved replies files (no server)."""

import json
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import yaml
from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp, Statevector
from scipy.optimize import minimize

from eval_replies_cases import fence, record, rycx

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PY = sys.executable


def _reference(n: int) -> QuantumCircuit:
    ns: dict = {}
    exec(rycx(n), ns)  # noqa: S102 - the test's own code, run by plain qiskit
    return ns["qc"]


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "evaluation", *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_score_writes_every_file_and_exit_codes(tmp_path):
    good = [record(f"g{i}", fence(rycx(n)), n=n, ham=h) | {"model": "ft", "latency_s": 0.1, "finish_reason": "stop"}
            for i, (n, h) in enumerate([(4, "xy_chain"), (6, "heisenberg"), (8, "tfim")])]
    replies = _write(tmp_path / "good.jsonl", good)
    p = _cli("score", replies, "--out", tmp_path / "good", "--no-progress")
    assert p.returncode == 0, p.stderr
    out = tmp_path / "good"
    log = yaml.safe_load((out / "validation_log.yaml").read_text())
    assert log["syntax_rate"] == 100 and log["verification_rate"] == 100 and log["bp_free_rate"] == 100
    assert log["num_tests"] == 3 and log["passed"] is True and log["model"] == "ft"
    assert log["judge_errors"] == [] and log["request_errors"] == [] and log["constraint_rate"] is None
    assert set(log["by_num_qubits"]) == {4, 6, 8} and set(log["by_hamiltonian"]) == {"xy_chain", "heisenberg", "tfim"}
    assert log["thresholds"] == {"syntax": 95.0, "verification": 80.0, "bp_free": 60.0}
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["g0", "g1", "g2"]
    for r, rec in zip(rows, good):
        ref = _reference(rec["num_qubits"])  # plain qiskit on the same code
        assert {k: r[k] for k in ("id", "hamiltonian", "num_qubits", "reply", "model", "finish_reason")} == \
            {k: rec[k] for k in ("id", "hamiltonian", "num_qubits", "reply", "model", "finish_reason")}
        assert r["code"] == rycx(rec["num_qubits"]).strip() and r["syntax_valid"] is True and r["verification_pass"] is True
        assert r["num_qubits_found"] == ref.num_qubits and r["depth"] == ref.depth()
        assert r["num_parameters"] == ref.num_parameters and r["gate_counts"] == dict(sorted(ref.count_ops().items()))
        assert r["bp_free"] is True and r["bp_variance"] > 1e-3 and r["energy_error"] is None  # no --vqe
        assert r["failure"] is None and r["error"] is None and r["constraint_satisfied"] is None
    report = (out / "report.md").read_text()
    for line in ("| Syntax valid | 100.0 | > 95 | yes |", "| Verification pass | 100.0 | > 80 | yes |",
                 "| BP-free | 100.0 | > 60 | yes |", "| xy_chain | 1 | 100.0 | 100.0 | 100.0 |",
                 "| 6 | 1 | 100.0 | 100.0 | 100.0 |", "Result: **PASSED**", "Replies: 3 (3 scored)"):
        assert line in report, line
    for name, size in (("rates.png", (400, 700)), ("breakdown.png", (400, 1000))):
        img = plt.imread(out / name)
        assert img.shape[:2] == size, name  # figsize x dpi 100
        assert img[..., :3].std() > 0.05, name  # drawn on, not a blank canvas

    bad = good + [record("b0", "I cannot do that."), record("b1", fence("x = = 1"))]
    p = _cli("score", _write(tmp_path / "bad.jsonl", bad), "--out", tmp_path / "bad", "--no-progress")
    assert p.returncode == 1, p.stderr
    log_bad = yaml.safe_load((tmp_path / "bad" / "validation_log.yaml").read_text())
    assert log_bad["syntax_rate"] == 60.0 and log_bad["passed"] is False
    # a prose-only reply has no code (issue 9 taxonomy); a broken fence is a syntax error
    assert log_bad["failures"] == {"no_code": 1, "syntax_error": 1} and log_bad["num_tests"] == 5
    # thresholds are overridable
    p = _cli("score", tmp_path / "bad.jsonl", "--out", tmp_path / "bad2", "--no-progress", "--min-syntax", "50",
             "--min-verification", "50", "--min-bp-free", "50")
    assert p.returncode == 0, p.stderr

    p = _cli("compare", tmp_path / "bad", tmp_path / "good", "--out", tmp_path / "cmp")
    assert p.returncode == 0, p.stderr  # B (good) verifies more than A (bad)
    comp = yaml.safe_load((tmp_path / "cmp" / "comparison.yaml").read_text())
    ver = comp["metrics"]["verification_rate"]
    assert {k: ver[k] for k in ("a", "b", "change")} == {"a": 60.0, "b": 100.0, "change": 40.0}
    assert comp["metrics"]["constraint_rate"] == {"a": None, "b": None, "change": None}  # no constrained prompt
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 0 and (tmp_path / "cmp" / "report.md").is_file()


def test_vqe_flag_records_energy_error(tmp_path):
    replies = _write(tmp_path / "r.jsonl", [record("v", fence(rycx(4)), n=4, ham="tfim")])
    p = _cli("score", replies, "--out", tmp_path / "o", "--no-progress", "--vqe")
    assert p.returncode == 0, p.stderr
    row = json.loads((tmp_path / "o" / "results.jsonl").read_text())
    # independent reference: exact diagonalisation of the TFIM (h = 1) built here from its definition,
    # and the ansatz's own optimum found by scipy on qiskit Statevector energies
    n = 4
    ham = SparsePauliOp.from_sparse_list([("ZZ", [i, i + 1], 1.0) for i in range(n - 1)] +
                                         [("X", [i], 1.0) for i in range(n)], num_qubits=n)
    e0 = float(np.linalg.eigvalsh(ham.to_matrix())[0])
    qc = _reference(n)

    def energy(x):
        return float(np.real(Statevector(qc.assign_parameters(x)).expectation_value(ham)))

    rng = np.random.default_rng(7)
    best = min(minimize(energy, rng.uniform(0, 2 * np.pi, qc.num_parameters), method="BFGS").fun for _ in range(2))
    assert row["vqe_energy"] - e0 == pytest.approx(row["energy_error"], abs=1e-9)
    assert row["vqe_energy"] == pytest.approx(best, abs=1e-5)  # the ansatz's optimum, not any energy
    assert row["energy_error"] > 1e-3  # RY+CX with one entangling layer does not reach the TFIM ground state


def test_usage_errors_exit_2(tmp_path):
    assert _cli("score", tmp_path / "missing.jsonl", "--out", tmp_path / "o").returncode == 2
    (tmp_path / "junk.jsonl").write_text("{not json}\n")
    p = _cli("score", tmp_path / "junk.jsonl", "--out", tmp_path / "o")
    assert p.returncode == 2 and "not JSON" in p.stderr
    assert _cli("compare", tmp_path, tmp_path, "--out", tmp_path / "c").returncode == 2
    assert _cli("run", "--model", "x").returncode == 2  # missing --base-url / --out
    p = _cli("run", "--base-url", "http://127.0.0.1:9/v1", "--model", "x", "--out", tmp_path / "r")
    assert p.returncode == 2 and "cannot reach" in p.stderr
    (tmp_path / "one.jsonl").write_text(json.dumps(record("a", "x")) + "\n")
    for flag, value, message in (("--bp-threshold", "nan", "--bp-threshold must be a finite number > 0"),
                                 ("--judge-timeout", "0", "must be > 0"),
                                 ("--max-judge-errors", "-1", "--max-judge-errors must be >= 0")):
        p = _cli("score", tmp_path / "one.jsonl", "--out", tmp_path / "o", flag, value)
        assert p.returncode == 2 and message in p.stderr, (flag, p.stderr)


def test_help_documents_every_flag():
    p = _cli("run", "--help")
    for flag in ("--base-url", "--model", "--api-key", "--num-tests", "--concurrency", "--temperature", "--max-tokens",
                 "--seed", "--out", "--resume", "--vqe", "--judge-timeout", "--max-judge-errors"):
        assert flag in p.stdout
    assert "exits 2" in _cli("score", "--help").stdout


def test_bad_records_are_usage_errors(tmp_path):
    bad = _write(tmp_path / "r.jsonl", [record("a", "x", n=4, ham="ising")])
    p = _cli("score", bad, "--out", tmp_path / "o")
    assert p.returncode == 2 and "unknown hamiltonian 'ising'" in p.stderr
    bad = _write(tmp_path / "r2.jsonl", [record("a", "x", n=40)])
    p = _cli("score", bad, "--out", tmp_path / "o")
    assert p.returncode == 2 and "num_qubits" in p.stderr
    assert not (tmp_path / "o" / "results.jsonl").exists()


def test_torn_last_line_is_dropped_on_resume(tmp_path):
    from evaluation.client import read_replies

    path = tmp_path / "replies.jsonl"
    path.write_text(json.dumps({"id": "t0000", "reply": "a"}) + "\n" + '{"id": "t0001", "rep')
    assert [r["id"] for r in read_replies(path)] == ["t0000"]
    assert path.read_text().endswith("}\n")  # the torn tail was cut, appends start on a clean line
