"""`python -m evaluation score` and `compare` on saved replies files (no server)."""

import json
import subprocess
import sys
from pathlib import Path

import yaml

from eval_replies_cases import fence, record, rycx

PY = sys.executable


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
    for name in ("results.jsonl", "validation_log.yaml", "report.md", "rates.png", "breakdown.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    log = yaml.safe_load((out / "validation_log.yaml").read_text())
    assert log["syntax_rate"] == 100 and log["verification_rate"] == 100 and log["bp_free_rate"] == 100
    assert log["num_tests"] == 3 and log["passed"] is True and log["model"] == "ft"
    assert set(log["by_num_qubits"]) == {4, 6, 8} and set(log["by_hamiltonian"]) == {"xy_chain", "heisenberg", "tfim"}
    assert log["thresholds"] == {"syntax": 95.0, "verification": 80.0, "bp_free": 60.0}
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    keys = {"id", "hamiltonian", "num_qubits", "constraint", "reply", "model", "latency_s", "finish_reason", "code",
            "syntax_valid", "verification_pass", "bp_free", "num_qubits_found", "depth", "num_parameters", "gate_counts",
            "constraint_satisfied", "bp_variance", "energy_error", "error"}
    assert all(keys <= set(r) for r in rows)

    bad = good + [record("b0", "I cannot do that."), record("b1", fence("x = = 1"))]
    p = _cli("score", _write(tmp_path / "bad.jsonl", bad), "--out", tmp_path / "bad", "--no-progress")
    assert p.returncode == 1, p.stderr
    log_bad = yaml.safe_load((tmp_path / "bad" / "validation_log.yaml").read_text())
    assert log_bad["syntax_rate"] == 60.0 and log_bad["passed"] is False
    # thresholds are overridable
    p = _cli("score", tmp_path / "bad.jsonl", "--out", tmp_path / "bad2", "--no-progress", "--min-syntax", "50",
             "--min-verification", "50", "--min-bp-free", "50")
    assert p.returncode == 0, p.stderr

    p = _cli("compare", tmp_path / "bad", tmp_path / "good", "--out", tmp_path / "cmp")
    assert p.returncode == 0, p.stderr  # B (good) verifies more than A (bad)
    comp = yaml.safe_load((tmp_path / "cmp" / "comparison.yaml").read_text())
    ver = comp["metrics"]["verification_rate"]
    assert {k: ver[k] for k in ("a", "b", "change")} == {"a": 60.0, "b": 100.0, "change": 40.0}
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 0 and (tmp_path / "cmp" / "report.md").is_file()


def test_vqe_flag_records_energy_error(tmp_path):
    replies = _write(tmp_path / "r.jsonl", [record("v", fence(rycx(4)), n=4, ham="tfim")])
    p = _cli("score", replies, "--out", tmp_path / "o", "--no-progress", "--vqe")
    assert p.returncode == 0, p.stderr
    row = json.loads((tmp_path / "o" / "results.jsonl").read_text())
    assert row["energy_error"] is not None and row["energy_error"] > -1e-6


def test_usage_errors_exit_2(tmp_path):
    assert _cli("score", tmp_path / "missing.jsonl", "--out", tmp_path / "o").returncode == 2
    (tmp_path / "junk.jsonl").write_text("{not json}\n")
    p = _cli("score", tmp_path / "junk.jsonl", "--out", tmp_path / "o")
    assert p.returncode == 2 and "not JSON" in p.stderr
    assert _cli("compare", tmp_path, tmp_path, "--out", tmp_path / "c").returncode == 2
    assert _cli("run", "--model", "x").returncode == 2  # missing --base-url / --out
    p = _cli("run", "--base-url", "http://127.0.0.1:9/v1", "--model", "x", "--out", tmp_path / "r")
    assert p.returncode == 2 and "cannot reach" in p.stderr


def test_help_documents_every_flag():
    p = _cli("run", "--help")
    for flag in ("--base-url", "--model", "--api-key", "--num-tests", "--concurrency", "--temperature", "--max-tokens",
                 "--seed", "--out", "--resume", "--vqe"):
        assert flag in p.stdout


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
