"""The HumanEval judge: one job kind ("humaneval") of the sandbox runner (evaluation.sandbox).

A job's code is the whole program (the task's prompt, the completion, the task's test and the
`check(entry_point)` call: evaluation.humaneval.assemble). In G the runner execs it; the test's asserts
decide, so there is nothing to collect. In I, `judge` turns G's header into the verdict: passed when the
program ran to its end without an exception, `assertion` for a failed test, otherwise the evaluation's
failure vocabulary (evaluation.failures.classify_exec_error).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from evaluation.sandbox.preload import preload as preload_stack
from evaluation.failures import ASSERTION, classify_exec_error

log = logging.getLogger(__name__)

_IMPORT = re.compile(r"^\s*(?:from\s+([A-Za-z_][\w.]*)\s+import\b|import\s+([A-Za-z_][\w.]*(?:\s*,\s*[A-Za-z_][\w.]*)*))",
                     re.MULTILINE)


def dataset_modules() -> list[str]:
    """Every module the tasks' prompts, canonical solutions and tests import (both variants), sorted."""
    from evaluation.humaneval.tasks import VARIANTS, load_tasks

    names: set[str] = set()
    for variant in VARIANTS:
        for t in load_tasks(variant):
            for text in (t.prompt, t.canonical_solution, t.test):
                for m in _IMPORT.finditer(text):
                    if m.group(1):
                        names.add(m.group(1))
                    else:
                        names.update(n.strip() for n in m.group(2).split(","))
    return sorted(names)


def preload() -> None:
    """In the fork server, once: everything the tasks import, so a forked reply starts warm (a fresh
    interpreter spends ~1.2 s on these imports). A module missing here is left to fail in the reply."""
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: the forks inherit a headless backend
    import matplotlib.font_manager  # noqa: F401  (the font list, built once, not per reply)
    import matplotlib.pyplot  # noqa: F401

    preload_stack(dataset_modules(), missing_level=logging.DEBUG)  # e.g. qiskit_ibm_transpiler: not installed


def collect(namespace: dict, job: dict, header: dict) -> None:
    """In G: nothing beyond the exception (header["exec_error"]) and a SystemExit (header["exit"])."""


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


def judge(job: dict, cfg: dict, header: dict, limits) -> dict:
    """In I: the verdict from G's header (untrusted, already parsed as JSON by the runner)."""
    exec_error = header.get("exec_error")
    exit_code = header.get("exit")
    return verdict(None if exec_error is None else str(exec_error), None if exit_code is None else str(exit_code))


def failed_run(job: dict, error: str, failure: str, partial: dict | None = None) -> dict:
    return {"passed": False, "failure": failure, "error": error}
