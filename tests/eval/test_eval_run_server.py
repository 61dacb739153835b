"""`python -m evaluation run` end to end against a real vLLM server (tiny model) on 127.0.0.1."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from evaluation.failures import FAILURES

from quantummind.serving import free_port, wait_for_health

PY = sys.executable
REPLY_KEYS = {"id", "hamiltonian", "num_qubits", "constraint", "prompt", "reply", "model", "latency_s", "finish_reason"}


def _run_args(base_url: str, out: Path, *extra) -> list[str]:
    return [PY, "-m", "evaluation", "run", "--base-url", base_url, "--model", "tiny", "--out", str(out),
            "--max-tokens", "48", "--no-progress", "--sandbox-timeout", "5", *map(str, extra)]


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


@pytest.mark.slow
def test_run_records_all_replies_and_writes_every_file(vllm_server, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OPENAI_API_KEY="sk-from-env")
    p = subprocess.run(_run_args(vllm_server.base_url, out, "--num-tests", 6, "--concurrency", 4, "--seed", 3),
                       capture_output=True, text=True, timeout=300, env=env)
    # a random-weight model writes no valid circuit: the targets are missed, exit 1 exactly (not 0, not 2)
    assert p.returncode == 1, p.stderr
    replies = _lines(out / "replies.jsonl")
    assert len(replies) == 6 and sorted(r["id"] for r in replies) == [f"t{i:04d}" for i in range(6)]
    assert all(REPLY_KEYS <= set(r) and r["model"] == "tiny" and r["latency_s"] > 0 for r in replies)
    assert all(r["finish_reason"] in ("stop", "length") for r in replies)
    results = _lines(out / "results.jsonl")
    assert len(results) == 6 and all("syntax_valid" in r and "verification_pass" in r for r in results)
    # each result is the verdict on its own reply: same id, same text, and a failure kind that fits the reply
    by_id = {r["id"]: r for r in replies}
    assert all(r["reply"] == by_id[r["id"]]["reply"] for r in results)
    assert all(r["verification_pass"] is False and r["failure"] in FAILURES for r in results)
    assert all(r["failure"] in ("no_code", "syntax_error") for r in results if not r["syntax_valid"])
    log = yaml.safe_load((out / "validation_log.yaml").read_text())
    assert log["model"] == "tiny" and log["endpoint"] == vllm_server.base_url and log["num_tests"] == 6
    assert log["passed"] is False and log["verification_rate"] == 0.0
    assert log["syntax_rate"] == pytest.approx(100 * sum(r["syntax_valid"] for r in results) / 6, abs=0.01)
    assert {"syntax_rate", "verification_rate", "bp_free_rate", "passed", "thresholds", "time",
            "by_hamiltonian", "by_num_qubits"} <= set(log)
    assert (p.returncode == 0) == log["passed"]
    for name in ("report.md", "rates.png", "breakdown.png"):
        assert (out / name).stat().st_size > 0


@pytest.mark.slow
def test_wrong_model_name_lists_served_models(vllm_server, tmp_path):
    args = _run_args(vllm_server.base_url, tmp_path / "x")
    args[args.index("tiny")] = "no-such-model"
    p = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "served models: tiny" in p.stderr
    assert not (tmp_path / "x" / "replies.jsonl").exists()


@pytest.mark.slow
def test_resume_after_killed_run_loses_nothing(vllm_server, tmp_path):
    out = tmp_path / "resume"
    args = _run_args(vllm_server.base_url, out, "--num-tests", 16, "--concurrency", 1, "--seed", 5)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while len(_lines(out / "replies.jsonl")) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _lines(out / "replies.jsonl")
    assert 3 <= len(before) < 16, "the run should have been killed part-way"
    assert not (out / "results.jsonl").exists()
    p = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "--resume" in p.stderr  # refuses to clobber without --resume
    p = subprocess.run(args + ["--resume"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stderr  # all 16 scored; a random-weight model misses the targets
    after = _lines(out / "replies.jsonl")
    assert after[: len(before)] == before  # nothing received before the kill was lost or rewritten
    assert sorted(r["id"] for r in after) == [f"t{i:04d}" for i in range(16)]
    assert len(_lines(out / "results.jsonl")) == 16


def test_server_killed_mid_run_keeps_what_was_received(tmp_path):
    """The fault a real server can't produce on demand: a TEST-ONLY fake endpoint dies after 3 replies."""
    port = free_port()
    server = subprocess.Popen([PY, str(Path(__file__).with_name("fake_dying_server.py")), str(port), "3"])
    try:
        wait_for_health(f"http://127.0.0.1:{port}/v1", timeout_s=20, proc=server)
        out = tmp_path / "dead"
        p = subprocess.run([PY, "-m", "evaluation", "run", "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "tiny",
                            "--out", str(out), "--num-tests", "10", "--concurrency", "1", "--max-retries", "1",
                            "--no-progress"], capture_output=True, text=True, timeout=120)
        assert p.returncode == 2
        assert "lost the server" in p.stderr and "3 replies received" in p.stderr and "--resume" in p.stderr
        kept = _lines(out / "replies.jsonl")
        assert [r["reply"] for r in kept] == ["reply 1", "reply 2", "reply 3"]
    finally:
        server.kill()
        server.wait()


@pytest.mark.slow
def test_base_url_without_v1_hints_at_v1(vllm_server, tmp_path):
    """Issue 23: a base URL without /v1 gets vLLM's 404 for /models; the line says what to type instead."""
    bare = vllm_server.base_url.removesuffix("/v1")
    p = subprocess.run(_run_args(bare, tmp_path / "x"), capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert "HTTP 404" in p.stderr and f"did you mean {bare}/v1" in p.stderr, p.stderr
