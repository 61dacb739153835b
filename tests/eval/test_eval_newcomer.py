"""Issue 23 on the evaluation side: environment errors are exit 2 (not "targets not met"), `compare`
questions what it is given, the exact test's own minimum, and the small ones (aliases, --help)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from evaluation import stats
from test_eval_compare_stats import circuit_run, humaneval_run, outcomes

PY = sys.executable


def _cli(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "evaluation", *map(str, args)], capture_output=True, text=True, timeout=timeout)


def _one_error_line(p: subprocess.CompletedProcess, needle: str) -> None:
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], p.stderr


# ------------------------------------------------------------------------------- item 5: unwritable --out

def test_unwritable_out_is_one_line_exit_2_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    out = blocker / "out"  # under a regular file: cannot be created, even by root
    replies = tmp_path / "r.jsonl"
    replies.write_text(json.dumps({"id": "a", "hamiltonian": "heisenberg", "num_qubits": 4, "constraint": None,
                                   "reply": "no code"}) + "\n")
    _one_error_line(_cli("score", replies, "--out", out, "--no-progress"), "cannot be written")
    # checked before the server is asked: the line is about --out, not the unreachable endpoint
    _one_error_line(_cli("run", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--out", out),
                    "cannot be written")
    a, b = outcomes(3, 1, 2, 4)
    da, db = circuit_run(tmp_path / "A", "base", a), circuit_run(tmp_path / "B", "tuned", b)
    _one_error_line(_cli("compare", da, db, "--out", out), "cannot be written")
    for sub in (["canonical"], ["score", replies]):
        _one_error_line(_cli("humaneval", *sub, "--out", out, "--no-progress"), "cannot be written")
    assert blocker.read_text() == "not a folder\n"


# ----------------------------------------------------------------------------------- item 6: compare

def test_compare_refuses_the_same_directory_twice(tmp_path):
    a, _ = outcomes(3, 1, 2, 4)
    da = circuit_run(tmp_path / "A", "base", a)
    (tmp_path / "link").symlink_to(da)
    for other in (da, tmp_path / "link", tmp_path / "A" / ".." / "A"):
        _one_error_line(_cli("compare", da, other, "--out", tmp_path / "c"), "same directory")
    he = humaneval_run(tmp_path / "H", "m", "normal", {"t/0": [True]})
    _one_error_line(_cli("compare", he, he, "--out", tmp_path / "c"), "same directory")


def test_compare_warns_on_different_sizes_and_sampling(tmp_path):
    a, b = outcomes(10, 3, 12, 20)  # 45 prompts
    b4 = {k: b[k] for k in list(b)[:4]}  # B answered 4 of them
    da, db = circuit_run(tmp_path / "A", "base", a), circuit_run(tmp_path / "B", "tuned", b4)
    for d, temp in ((da, 0.7), (db, 0.2)):
        log = yaml.safe_load((d / "validation_log.yaml").read_text())
        (d / "validation_log.yaml").write_text(yaml.safe_dump(log | {"temperature": temp, "seed": 1}))
    p = _cli("compare", da, db, "--out", tmp_path / "c")
    warnings = [x for x in p.stderr.splitlines() if x.startswith("warning:")]
    assert len(warnings) == 2, p.stderr
    assert "A has 45 replies and B 4: only the 4 prompts both answered are paired" in warnings[0]
    assert "temperature 0.7 vs 0.2" in warnings[1] and "seed" not in warnings[1]
    comp = yaml.safe_load((tmp_path / "c" / "comparison.yaml").read_text())
    assert [w in comp["warnings"][i] for i, w in enumerate(("45 replies", "temperature"))] == [True, True]
    assert "**Warning**: A has 45 replies" in (tmp_path / "c" / "report.md").read_text()
    # like with like: no warning at all
    dc = circuit_run(tmp_path / "C", "tuned", b)
    p = _cli("compare", da, dc, "--out", tmp_path / "c2")
    assert "warning:" not in p.stderr and yaml.safe_load((tmp_path / "c2" / "comparison.yaml").read_text())[
        "warnings"] == []


def test_compare_refuses_different_prompts_under_one_id_and_no_shared_ids(tmp_path):
    a, b = outcomes(3, 1, 2, 4)
    da, db = circuit_run(tmp_path / "A", "base", a), circuit_run(tmp_path / "B", "tuned", b)
    rows = [json.loads(x) for x in (db / "results.jsonl").read_text().splitlines()]
    rows[0]["hamiltonian"] = "tfim"
    (db / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _one_error_line(_cli("compare", da, db, "--out", tmp_path / "c"), "different prompts under the same id")
    dx = circuit_run(tmp_path / "X", "tuned", {f"other{i}": True for i in range(5)})
    _one_error_line(_cli("compare", da, dx, "--out", tmp_path / "c"), "no prompt id in common")


def test_prompts_needed_is_never_below_the_exact_tests_minimum():
    """5 of 5 discordant pairs one way gives p = 0.0625: the exact test needs 6 (scipy finds it)."""
    assert stats.min_discordant_pairs() == 6
    assert stats.mcnemar_exact(0, 5) > 0.05 > stats.mcnemar_exact(0, 6)
    # 4 prompts, B right on all, A on none: Connor's approximation alone says 4
    assert stats.mcnemar_sample_size(0.0, 1.0) < 6
    four = stats.pair_outcomes({str(i): False for i in range(4)}, {str(i): True for i in range(4)})
    assert stats.sample_size_for(four) == 6
    # half the prompts discordant, all one way: at least 12 prompts for 6 expected discordant pairs
    half = stats.pair_outcomes({str(i): False for i in range(8)}, {str(i): i < 4 for i in range(8)})
    assert stats.sample_size_for(half) >= 12
    # where Connor's figure is already large, it stands
    a, b = outcomes(10, 3, 12, 15)
    assert stats.sample_size_for(stats.pair_outcomes(a, b)) == stats.mcnemar_sample_size(3 / 40, 12 / 40)


# ------------------------------------------------------------------------------------- item 8: small ones

def test_compare_help_prints_95_percent_not_a_literal_double_percent():
    p = _cli("compare", "--help")
    assert p.returncode == 0 and "95 % Wilson" in " ".join(p.stdout.split()) and "%%" not in p.stdout


@pytest.mark.parametrize("command", [["run"], ["humaneval", "run"]])
def test_both_spellings_of_the_shared_options_work(command, tmp_path):
    """--sandbox-timeout/--timeout and --num-tests/--num-tasks: each command takes both names (the
    values reach the same setting: a bad one is refused with the command's own message)."""
    for spelling in ("--num-tests", "--num-tasks"):
        p = _cli(*command, "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--out", tmp_path / "o",
                 spelling, "0")
        assert p.returncode == 2 and "must be >= 1" in p.stderr, (spelling, p.stderr)
    for spelling in ("--sandbox-timeout", "--timeout"):
        p = _cli(*command, "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--out", tmp_path / "o",
                 spelling, "-1")
        assert p.returncode == 2 and "> 0" in p.stderr and "unrecognized" not in p.stderr, (spelling, p.stderr)
    help_text = " ".join(_cli(*command, "--help").stdout.split())
    assert all(flag in help_text for flag in ("--num-tests", "--num-tasks", "--sandbox-timeout", "--timeout"))
