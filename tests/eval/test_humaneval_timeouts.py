"""Issue 19, item 4: per-task HumanEval time limits, max(30 s, 4 x the canonical solution's time measured on
this machine and stack), cached per machine+stack; `--timeout` overrides; the sandbox honours each task's limit."""

from __future__ import annotations

from evaluation.humaneval import timeouts
from evaluation.humaneval.scoring import Sample, default_limits, score_samples
from evaluation.humaneval.tasks import tasks_by_id

T5 = "qiskitHumanEval/5"


def test_limits_come_from_the_canonical_times_of_this_machine_and_stack(tmp_path, monkeypatch):
    path = tmp_path / "times.json"
    assert timeouts.task_limits("normal", path) is None  # nothing measured: the caller uses 30 s
    results = [{"task_id": "a", "exec_seconds": 2.0, "failure": None},
               {"task_id": "b", "exec_seconds": 20.0, "failure": None},
               {"task_id": "c", "exec_seconds": 400.0, "failure": "timeout"},     # not a measurement
               {"task_id": "d", "exec_seconds": None, "failure": "syntax_error"}]
    timeouts.save_canonical_times(results, "normal", path)
    assert timeouts.task_limits("normal", path) == {"a": 30.0, "b": 80.0}
    assert timeouts.task_limits("hard", path) is None
    monkeypatch.setattr(timeouts, "fingerprint", lambda: "another machine or stack")
    assert timeouts.task_limits("normal", path) is None
    assert [timeouts.bucket(x) for x in (1, 30, 31, 80, 120, 121)] == [30, 30, 60, 120, 120, 240]


def test_the_sandbox_gives_each_task_its_own_limit():
    """The canonical body of task 5 after a 3 s sleep: timed out under a 2 s limit, passes under its own 8 s."""
    body = "    import time\n    time.sleep(3)\n" + tasks_by_id("normal")[T5].canonical_solution.lstrip("\n")
    samples = [Sample(T5, 0, body)]
    short = score_samples(samples, "normal", workers=1, limits=default_limits(2.0))[0]
    assert (short["passed"], short["failure"]) == (False, "timeout")
    own = score_samples(samples, "normal", workers=1, limits=default_limits(2.0), task_timeouts={T5: 8.0})[0]
    assert (own["passed"], own["failure"]) == (True, None)
