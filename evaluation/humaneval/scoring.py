"""Score HumanEval samples: assemble each program, run it in the sandbox (job kind "humaneval"), one result each.

results.jsonl fields (a contract, read by `compare`): task_id, sample, passed, failure, error, exec_seconds.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from evaluation.extract import syntax_ok
from evaluation.failures import EXCLUDED as EXCLUDED_FAILURE
from evaluation.humaneval.assemble import split_program
from evaluation.humaneval.codec import MAX_LINE
from evaluation.humaneval.tasks import Task, check_variant, exclusions, load_tasks, tasks_by_id
from evaluation.sandbox import MiB, SandboxLimits, run_jobs

if TYPE_CHECKING:
    from evaluation.sandbox import Session

log = logging.getLogger(__name__)

RESULT_FIELDS = ("task_id", "sample", "passed", "failure", "error", "exec_seconds")
TIMEOUT_S = 30.0  # per task, as upstream
CANONICAL_PASSED_MARK = "[canonical solution in the sandbox: passed]"


def default_limits(timeout_s: float = TIMEOUT_S) -> SandboxLimits:
    """The circuit judge's limits with HumanEval's timeout. The task's test runs in the judge (I) with the
    same wall-clock budget as the candidate's calls. Memory: 1 GiB of address space above the fork server, the
    runner's default; measured, the hungriest canonical solution (task 34, Aer behind fake-backend runtime
    jobs) needs more than 256 MiB and at most 512. Answers cross as JSON lines of up to 64 MiB (task 100's is
    31 MiB)."""
    return SandboxLimits(timeout_s=timeout_s, judge_timeout_s=timeout_s, memory_bytes=1024 * MiB,
                         result_bytes=MAX_LINE)


@dataclass(frozen=True)
class Sample:
    task_id: str
    sample: int
    completion: str


def parse_samples(records: Iterable[dict], variant: str) -> list[Sample]:
    """Validated samples (task ids of the variant, non-negative int sample indices, no duplicates)."""
    known = tasks_by_id(variant)
    out: list[Sample] = []
    seen: set[tuple[str, int]] = set()
    for i, r in enumerate(records, 1):
        tid, idx, comp = r.get("task_id"), r.get("sample", 0), r.get("completion")
        if tid not in known:
            raise ValueError(f"sample {i}: unknown task_id {tid!r} (expected e.g. 'qiskitHumanEval/0')")
        if not isinstance(idx, int) or isinstance(idx, bool) or idx < 0:
            raise ValueError(f"sample {i} ({tid}): 'sample' must be a non-negative integer")
        if comp is not None and not isinstance(comp, str):
            raise ValueError(f"sample {i} ({tid}): 'completion' must be a string")
        if (tid, idx) in seen:
            raise ValueError(f"sample {i}: duplicate ({tid}, sample {idx})")
        seen.add((tid, idx))
        out.append(Sample(tid, idx, comp or ""))
    return out


def split_refused(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(the records to score, the requests the endpoint refused as {task_id, sample, reason}). A refusal
    that a later record of the same (task_id, sample) replaces (a `--resume` resent it) is dropped;
    refusals are never scored (docs/humaneval.md). Real duplicates stay, for parse_samples to refuse."""
    def key(r: dict) -> tuple:
        return r.get("task_id"), r.get("sample", 0)

    last = {key(r): i for i, r in enumerate(records)}
    kept = [r for i, r in enumerate(records) if not (r.get("finish_reason") == "error" and last[key(r)] != i)]
    refused = [{"task_id": r.get("task_id"), "sample": r.get("sample", 0), "reason": str(r.get("error"))[:300]}
               for r in kept if r.get("finish_reason") == "error"]
    return [r for r in kept if r.get("finish_reason") != "error"], refused


def canonical_samples(variant: str) -> list[Sample]:
    """The canonical solutions as completions (normal: the body; hard: the whole function)."""
    return [Sample(t.task_id, 0, t.canonical_solution) for t in load_tasks(variant)]


def _result(s: Sample, passed: bool, failure: str | None, error: str | None, secs: float | None) -> dict[str, Any]:
    return {"task_id": s.task_id, "sample": s.sample, "passed": passed, "failure": failure, "error": error,
            "exec_seconds": secs}


def humaneval_cfg(workers: int | None = None, limits: SandboxLimits | None = None) -> dict[str, Any]:
    """The fork server's cfg for HumanEval jobs (a kept-alive session is started with it)."""
    return {"workers": workers or os.cpu_count() or 1, "limits": asdict(limits or default_limits()),
            "kinds": ["humaneval"]}


def run_programs(jobs: list[dict], *, workers: int | None = None, limits: SandboxLimits | None = None,
                 progress: bool = False, info: dict | None = None,
                 session: Session | None = None) -> Iterator[tuple[Any, dict]]:
    """(id, sandbox result) of each split HumanEval job ({"id", "code", "entry_point", "prelude", "test",
    "calls_check"}: evaluation.humaneval.assemble.split_program) run through `session` (started with
    humaneval_cfg of the same limits) or a fresh fork server."""
    jobs = [dict(j, kind="humaneval") for j in jobs]
    if not jobs:
        return iter(())
    cfg = humaneval_cfg(workers, limits)
    if session is None:
        return run_jobs(jobs, cfg, progress=progress, desc="humaneval", info=info)
    if session.cfg.get("limits") != cfg["limits"] or "humaneval" not in (session.cfg.get("kinds") or []):
        raise ValueError("sandbox session was started with other settings (limits or kinds) than HumanEval scoring")
    if info is not None:
        info.update(session.isolation)
    return iter(session.run(jobs).items())


def score_samples(samples: list[Sample], variant: str, *, workers: int | None = None,
                  limits: SandboxLimits | None = None, progress: bool = False, info: dict | None = None,
                  run_excluded: bool = False, excluded: dict[str, str] | None = None,
                  task_timeouts: dict[str, float] | None = None, session: Session | None = None) -> list[dict]:
    """Results in input order. Excluded tasks get failure "excluded" without running, unless run_excluded
    (the `canonical` check): then they run and the reason notes whether the solution passed anyway.
    `task_timeouts` (task_id -> seconds) replaces the wall clocks of those tasks' jobs (candidate and test).
    `session`: a kept-alive fork server started with `humaneval_cfg` (same limits)."""
    tasks: dict[str, Task] = tasks_by_id(check_variant(variant))
    excluded = exclusions() if excluded is None else excluded
    results: list[dict | None] = []
    jobs: list[dict] = []
    for i, s in enumerate(samples):
        task = tasks[s.task_id]
        if s.task_id in excluded and not run_excluded:
            results.append(_result(s, False, EXCLUDED_FAILURE, excluded[s.task_id], None))
            continue
        prog = split_program(s.completion, task, variant)
        if prog.code is None:
            results.append(_result(s, False, "no_code", "empty completion", None))
            continue
        ok, err = syntax_ok(prog.code)
        if not ok:
            results.append(_result(s, False, "syntax_error", f"{err} ({prog.shape})", None))
            continue
        # G runs `code` (prompt + completion); I runs `prelude` and `test` against it (never sent to G)
        jobs.append({"id": i, "kind": "humaneval", "code": prog.code, "entry_point": task.entry_point,
                     "prelude": prog.prelude, "test": prog.test, "calls_check": prog.calls_check})
        results.append(None)
    base = limits or default_limits()
    for job in jobs:  # a task's own limit (the canonical solution's time): the job carries it, one server for all
        limit = (task_timeouts or {}).get(samples[job["id"]].task_id)
        if limit is not None:
            job.update(timeout_s=float(limit), judge_timeout_s=float(limit))
    if jobs:
        for job_id, out in run_programs(jobs, workers=workers, limits=base, progress=progress, info=info,
                                        session=session):
            s = samples[job_id]
            res = _result(s, bool(out.get("passed")), out.get("failure"), out.get("error"), out.get("exec_seconds"))
            if s.task_id in excluded:
                how = "passed" if res["passed"] else f"{res['failure']}: {res['error']}"
                note = CANONICAL_PASSED_MARK if res["passed"] else f"[canonical solution in the sandbox: {how}]"
                res.update(passed=False, failure=EXCLUDED_FAILURE, error=f"{excluded[s.task_id]} {note}"[:600])
            results[job_id] = res
    return [r for r in results if r is not None]
