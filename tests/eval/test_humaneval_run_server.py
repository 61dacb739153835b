"""`python -m evaluation humaneval run` end to end against a real vLLM server (tiny model) on 127.0.0.1."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PY = sys.executable
SAMPLE_KEYS = {"task_id", "sample", "completion", "model", "finish_reason"}
RESULT_KEYS = ["task_id", "sample", "passed", "failure", "error", "exec_seconds"]
LOG_KEYS = {"variant", "model", "num_tasks", "num_samples", "pass_at", "by_difficulty", "excluded",
            "pass_at_all_tasks", "failures"}


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _run(base_url: str, out: Path, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "evaluation", "humaneval", "run", "--base-url", base_url, "--model", "tiny",
                           "--num-tasks", "3", "--samples", "2", "--max-tokens", "48", "--concurrency", "4",
                           "--seed", "1", "--timeout", "10", "--no-progress", "--out", str(out), *map(str, extra)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.serve
@pytest.mark.parametrize("api,variant", [("chat", "normal"), ("completions", "hard")])
def test_humaneval_run_writes_every_file(vllm_server, tmp_path, api, variant):
    out = tmp_path / f"{api}-{variant}"
    p = _run(vllm_server.base_url, out, "--api", api, "--variant", variant)
    assert p.returncode == 0, p.stderr
    samples = _lines(out / "samples.jsonl")
    expected = {(f"qiskitHumanEval/{t}", s) for t in range(3) for s in range(2)}
    assert {(r["task_id"], r["sample"]) for r in samples} == expected and len(samples) == 6
    assert all(SAMPLE_KEYS <= set(r) and r["model"] == "tiny" and isinstance(r["completion"], str) for r in samples)
    assert all(r["finish_reason"] in ("stop", "length") for r in samples)
    results = _lines(out / "results.jsonl")
    assert {(r["task_id"], r["sample"]) for r in results} == expected
    assert all(list(r) == RESULT_KEYS and isinstance(r["passed"], bool) for r in results)
    # each verdict follows from its own completion: a program that does not compile is syntax_error, an
    # empty completion no_code; a passing sample has no failure and a failing one has exactly one kind
    from evaluation.extract import syntax_ok
    from evaluation.humaneval.assemble import build_program
    from evaluation.humaneval.tasks import tasks_by_id

    tasks = tasks_by_id(variant)
    completion = {(r["task_id"], r["sample"]): r["completion"] for r in samples}
    for r in results:
        prog = build_program(completion[(r["task_id"], r["sample"])], tasks[r["task_id"]], variant)
        if prog.code is None:
            assert (r["passed"], r["failure"]) == (False, "no_code"), r
        elif not syntax_ok(prog.code)[0]:
            assert (r["passed"], r["failure"]) == (False, "syntax_error"), r
        else:
            assert (r["failure"] is None) == r["passed"] and r["failure"] != "syntax_error", r
    log = yaml.safe_load((out / "humaneval_log.yaml").read_text())
    assert LOG_KEYS <= set(log)
    assert log["variant"] == variant and log["model"] == "tiny" and log["num_tasks"] == 3 and log["num_samples"] == 2
    assert set(log["pass_at"]) == {1} and set(log["pass_at_all_tasks"]) == {1}
    assert sum(log["failures"].values()) == 6 - sum(r["passed"] for r in results)
    for name in ("report.md", "pass_at_k.png"):
        assert (out / name).stat().st_size > 0
    # a finished run resumed: nothing is sent again, nothing is lost
    p = _run(vllm_server.base_url, out, "--api", api, "--variant", variant, "--resume")
    assert p.returncode == 0, p.stderr
    assert _lines(out / "samples.jsonl") == samples


@pytest.mark.slow
@pytest.mark.serve
def test_humaneval_run_refuses_to_clobber_and_names_served_models(vllm_server, tmp_path):
    out = tmp_path / "x"
    out.mkdir()
    (out / "samples.jsonl").write_text('{"id": "qiskitHumanEval/0#0"}\n')
    p = _run(vllm_server.base_url, out)
    assert p.returncode == 2 and "--resume" in p.stderr
    p = subprocess.run([PY, "-m", "evaluation", "humaneval", "run", "--base-url", vllm_server.base_url, "--model",
                        "nope", "--out", str(tmp_path / "y")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "served models: tiny" in p.stderr
