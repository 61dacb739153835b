"""The HumanEval judge: one job kind ("humaneval") of the sandbox runner (evaluation.sandbox), a calling kind.

A job's `code` is the candidate program (the task's prompt and the completion, never the test:
evaluation.humaneval.assemble.split_program). In G the runner execs it, then `serve_calls` answers calls to the
candidate with data-only values; in I, locked down, `judge_calls` runs the task's `prelude` and `test` (fields
the runner keeps out of G: HIDDEN_FROM_REPLY) against a proxy of the candidate and decides: passed when the test
ran to its end, `assertion` for a failed assert, otherwise the evaluation's failure vocabulary
(evaluation.failures.classify_exec_error). Protocol and codec: evaluation/humaneval/wire.py, codec.py.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from typing import Any, Iterable

from evaluation.sandbox.preload import preload as preload_stack
from evaluation.failures import ASSERTION, classify_exec_error

log = logging.getLogger(__name__)

_IMPORT = re.compile(r"^\s*(?:from\s+([A-Za-z_][\w.]*)\s+import\b|import\s+([A-Za-z_][\w.]*(?:\s*,\s*[A-Za-z_][\w.]*)*))",
                     re.MULTILINE)


def task_modules() -> dict[str, set[str]]:
    """task_id -> the modules its prompt, canonical solution and test import (both variants)."""
    from evaluation.humaneval.tasks import VARIANTS, load_tasks

    out: dict[str, set[str]] = {}
    for variant in VARIANTS:
        for t in load_tasks(variant):
            names = out.setdefault(t.task_id, set())
            for text in (t.prompt, t.canonical_solution, t.test):
                for m in _IMPORT.finditer(text):
                    if m.group(1):
                        names.add(m.group(1))
                    else:
                        names.update(n.strip() for n in m.group(2).split(","))
    return out


def dataset_modules() -> list[str]:
    """Every module the tasks' prompts, canonical solutions and tests import (both variants), sorted."""
    return sorted(set().union(*task_modules().values()))


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package is missing
        return False


def missing_task_modules(excluded: Iterable[str]) -> dict[str, list[str]]:
    """module -> the tasks (not excluded) that import it, for each such module this install cannot
    import: those tasks would fail as the model's `missing_module` (e.g. an install without the eval
    extra). Empty on a complete install."""
    skip = set(excluded)
    needs: dict[str, list[str]] = {}
    for tid, names in task_modules().items():
        if tid not in skip:
            for name in names:
                needs.setdefault(name, []).append(tid)
    return {name: sorted(tids) for name, tids in sorted(needs.items()) if not _importable(name)}


def modules_elsewhere() -> list[str]:
    """dataset_modules(), computed in a forked child: the fork server, whose memory every reply inherits,
    must never hold the dataset (a completion could call the cached canonical solution and pass every task;
    tests/eval/test_humaneval_split.py::test_fork_server_holds_no_solutions)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            data = json.dumps(dataset_modules()).encode("ascii")
            while data:
                data = data[os.write(w, data):]
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as fh:
        chunks.append(fh.read())
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks) or b"[]")


def preload() -> None:
    """In the fork server, once: everything the tasks import, so a forked reply starts warm (a fresh
    interpreter spends ~1.2 s on these imports). A module missing here is left to fail in the reply
    (logged at debug: the CLI checks the install beforehand, missing_task_modules)."""
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: the forks inherit a headless backend
    import matplotlib.font_manager  # noqa: F401  (the font list, built once, not per reply)
    import matplotlib.pyplot  # noqa: F401

    preload_stack(modules_elsewhere(), missing_level=logging.DEBUG)  # e.g. qiskit_ibm_transpiler: not installed


# What G never holds: the test and the dataset code that runs it (the server hands them to I after G is forked).
HIDDEN_FROM_REPLY = ("prelude", "test", "calls_check")


def serve_calls(namespace: dict, job: dict, rfile, wfile, exec_error: str | None = None) -> None:
    """In G, after the candidate program ran: evaluation.humaneval.wire.serve_calls."""
    from evaluation.humaneval import wire

    wire.serve_calls(namespace, job, rfile, wfile, exec_error)


def judge_calls(job: dict, ready: dict | None, call, deadline: float) -> dict:
    """In I: evaluation.humaneval.wire.judge_calls; a test whose work on the candidate's values spends the
    judge's CPU budget or memory is the candidate's failure (too_complex / resource_limit), not a judge error."""
    from evaluation.humaneval import wire
    from evaluation.sandbox.kinds import BudgetExceeded

    try:
        return wire.judge_calls(job, ready, call, deadline)
    except BudgetExceeded as exc:
        return {"passed": False, "failure": "too_complex", "error": f"too complex to test: {exc}"[:300]}
    except MemoryError:
        return {"passed": False, "failure": "resource_limit", "error": "the test ran out of memory on the "
                                                                        "candidate's values"}


def verdict(exec_error: str | None, exit_code: str | None = None) -> dict[str, Any]:
    """passed / failure / error from the program's own outcome ("ExcType: message" or None; a SystemExit
    is never a pass: the test did not run to its end)."""
    if exit_code is not None:
        return {"passed": False, "failure": "runtime_error", "error": f"SystemExit: {exit_code}"[:300]}
    if not exec_error:
        return {"passed": True, "failure": None, "error": None}
    exc_type = exec_error.split(":", 1)[0].strip().rsplit(".", 1)[-1]
    failure = ASSERTION if exc_type == "AssertionError" else classify_exec_error(exec_error)
    return {"passed": False, "failure": failure, "error": str(exec_error)[:300]}


def failed_run(job: dict, error: str, failure: str, partial: dict | None = None) -> dict:
    return {"passed": False, "failure": failure, "error": error}
