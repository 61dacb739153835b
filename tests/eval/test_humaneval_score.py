"""`python -m evaluation humaneval score`: saved completions in every shape, executed in the sandbox.

The passing completions are the dataset's own canonical solutions reshaped the way models return them
(a body, a body whose first line lost its indentation, a whole function, a chat answer with fences); the
failing ones are wrong in a way whose failure kind is known in advance.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from evaluation.humaneval.tasks import tasks_by_id

PY = sys.executable
NORMAL, HARD = tasks_by_id("normal"), tasks_by_id("hard")
T0, T5 = "qiskitHumanEval/0", "qiskitHumanEval/5"   # QuantumCircuit(n); a three-line state preparation
LOG_KEYS = {"variant", "model", "num_tasks", "num_samples", "pass_at", "by_difficulty", "excluded",
            "pass_at_all_tasks", "failures"}
RESULT_KEYS = ["task_id", "sample", "passed", "failure", "error", "exec_seconds"]


def _body(task_id: str) -> str:
    return NORMAL[task_id].canonical_solution.strip("\n")  # indented body lines


def _lost_first_indent(task_id: str) -> str:
    lines = _body(task_id).split("\n")
    return "\n".join([lines[0].lstrip()] + lines[1:])


def _whole_function(task_id: str) -> str:
    return HARD[task_id].canonical_solution  # imports + def


# (task, completion, expected failure or None for a pass)
NORMAL_CASES = [
    (T5, "\n" + _body(T5) + "\n\n\ndef main():\n    pass\n\nprint(create_state_prep())\n", None),  # completions API
    (T5, _lost_first_indent(T5), None),
    (T5, textwrap.dedent(_body(T5)), None),                                      # no indentation at all
    (T0, _lost_first_indent(T0), None),                                          # one-line body, unindented
    (T5, _whole_function(T5) + "\n\n# Example usage\nqc = create_state_prep()\nprint(qc)\n"
         "if __name__ == \"__main__\":\n    raise SystemExit(3)\n", None),
    (T5, "def create_state_prep():\n" + _body(T5) + "\n", None),                 # function without imports
    (T5, "Sure! Install it first:\n```bash\npip install qiskit\n```\nThen:\n```python\n" + _whole_function(T5)
         + "```\nThis prepares |01>.", None),                                    # chat answer with fences
    (T0, "```python\n" + _body(T0) + "\n```", None),                             # a fenced body
    (T5, "Here is the function:\n\n" + _whole_function(T5) + "\nIt returns the circuit.", None),  # no fences
    (T0, "    return None", "assertion"),
    (T5, "    return 1 / 0", "runtime_error"),
    (T5, "    import qiskit_no_such_module\n    return None", "missing_module"),
    (T0, "    import sys\n    sys.exit(0)", "runtime_error"),                   # exiting early is no pass
    (T0, "", "no_code"),
    (T5, "def create_state_prep(:\n    return", "syntax_error"),
]


def _score(tmp_path: Path, cases, variant: str) -> tuple[list[dict], dict, Path]:
    samples = tmp_path / "in.jsonl"
    counter: dict[str, int] = {}
    with open(samples, "w") as fh:
        for task_id, completion, _ in cases:
            i = counter.get(task_id, 0)
            counter[task_id] = i + 1
            fh.write(json.dumps({"task_id": task_id, "sample": i, "completion": completion, "model": "saved"}) + "\n")
    out = tmp_path / "out"
    p = subprocess.run([PY, "-m", "evaluation", "humaneval", "score", str(samples), "--variant", variant,
                        "--out", str(out), "--no-progress", "--timeout", "20"],
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr
    results = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    return results, yaml.safe_load((out / "humaneval_log.yaml").read_text()), out


def test_every_completion_shape_is_scored_correctly(tmp_path):
    results, log, out = _score(tmp_path, NORMAL_CASES, "normal")
    assert len(results) == len(NORMAL_CASES)
    for (task_id, completion, expected), r in zip(NORMAL_CASES, results):
        assert list(r) == RESULT_KEYS
        assert r["task_id"] == task_id
        assert r["failure"] == expected, (completion, r)
        assert r["passed"] is (expected is None), (completion, r)
    assert LOG_KEYS <= set(log) and log["variant"] == "normal" and log["model"] == "saved"
    # task 0: 2 of 5 samples pass (the unindented one-liner, the fenced body); task 5: 7 of 10
    assert log["num_tasks"] == 2 and log["num_samples"] == 5
    assert log["pass_at"] == {1: pytest.approx(100 * (2 / 5 + 7 / 10) / 2, abs=0.01),
                              5: pytest.approx(100 * (1 + 1) / 2, abs=0.01)}
    assert log["by_difficulty"] == {"basic": log["pass_at"]}
    for name in ("samples.jsonl", "report.md", "pass_at_k.png"):
        assert (out / name).stat().st_size > 0


def test_hard_variant_needs_the_whole_function(tmp_path):
    cases = [
        (T5, "Here it is:\n```python\n" + _whole_function(T5) + "```", None),
        (T5, _whole_function(T5), None),
        (T5, _body(T5), "syntax_error"),    # a body alone: no prompt to complete in the hard variant
        ("qiskitHumanEval/43", _whole_function("qiskitHumanEval/43"), "excluded"),
    ]
    results, log, _ = _score(tmp_path, cases, "hard")
    assert [r["failure"] for r in results] == [c[2] for c in cases]
    assert results[2]["error"].startswith("IndentationError") or "SyntaxError" in results[2]["error"]
    assert results[3]["exec_seconds"] is None and "IBM Quantum account" in results[3]["error"]
    assert log["excluded"][0]["task_id"] == "qiskitHumanEval/43"
    assert log["pass_at"] == {1: pytest.approx(100 * 2 / 3, abs=0.01)}
    assert log["pass_at_all_tasks"] == {1: pytest.approx(100 * (2 / 3 + 0) / 2, abs=0.01)}


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"task_id": "qiskitHumanEval/999", "sample": 0, "completion": "x"}) + "\n")
    p = subprocess.run([PY, "-m", "evaluation", "humaneval", "score", str(bad), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "unknown task_id" in p.stderr and "Traceback" not in p.stderr


def test_bodies_that_lost_all_indentation_keep_their_nested_blocks(tmp_path):
    """Issue 19: a chat completion whose every line lost its indentation, nested blocks included (task 82:
    `with open('bell.qpy', 'wb') as fd:` + an indented line; task 65: inner helper defs before the final
    `return`), is assembled as the body re-indented by 4: it passes, as the unsandboxed program does."""
    t82, t65 = "qiskitHumanEval/82", "qiskitHumanEval/65"
    cases = [(t82, textwrap.dedent(_body(t82)), None), (t65, textwrap.dedent(_body(t65)), None),
             (t82, _lost_first_indent(t82), None)]
    results, _, _ = _score(tmp_path, cases, "normal")
    assert [(r["task_id"], r["passed"], r["failure"]) for r in results] == [(t, True, None) for t, _, _ in cases], \
        [r["error"] for r in results]
