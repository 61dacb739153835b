"""The judge-kind contract: what a judge module provides, the registry, and what judges import from the runner.

A job's "kind" names the module that judges it (JOB_KINDS). The runner (evaluation.sandbox) calls, per kind:

  preload()                            in the fork server, once: imports inherited by every fork.
  collect(namespace, job, header)      in G (hostile), after the job's code ran: adds what the judge needs to
                                       `header` (JSON-able; header["exec_error"] is the code's own exception).
                                       May return a context for collect_more.
  collect_more(context, job, header)   optional, in G: a second, time-boxed record (the circuit judge's rebuild
                                       at larger sizes); merge_more(header, more) combines them in I.
  judge(job, cfg, header, limits)      in I (trusted, locked down): the result fields from G's records alone.
  serve_calls(namespace, job, rfile, wfile) and judge_calls(job, call, deadline)
                                       optional, instead of collect/judge: G answers calls to the candidate with
                                       data-only values while I runs the task's test against them (HumanEval).
  failed_run(job, error, failure, partial=None)
                                       the result fields when judge() gave no verdict: `failure` is the
                                       reply's own ("timeout", "resource_limit", "runtime_error", "too_complex")
                                       or JUDGE_ERROR (the runner or judge broke: no verdict, never a score).

Everything G sends is written by a process the reply controls: a kind's judge must decide from what it can check
itself (the QPY it parses, the values it decodes into genuine objects), never from G's account of its own run.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Callable, Protocol

JOB_KINDS = {"circuit": "evaluation.circuit_judge", "humaneval": "evaluation.humaneval.judge"}


class JobKind(Protocol):
    def preload(self) -> None: ...
    def collect(self, namespace: dict, job: dict, header: dict) -> Any: ...
    def judge(self, job: dict, cfg: dict, header: dict, limits: Any) -> dict: ...
    def failed_run(self, job: dict, error: str, failure: str, partial: dict | None = None) -> dict: ...


def job_kind(job: dict) -> ModuleType:
    kind = job.get("kind", "circuit")
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    return importlib.import_module(JOB_KINDS[kind])


def interactive(kind: ModuleType) -> bool:
    """Whether the kind judges by calling into G while it runs (serve_calls/judge_calls)."""
    return callable(getattr(kind, "judge_calls", None)) and callable(getattr(kind, "serve_calls", None))


Call = Callable[[bytes], "bytes | None"]


def short_exc(exc: BaseException) -> str:
    """An exception as one short line: "TypeName: message" (at most 300 characters)."""
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # noqa: BLE001  (a reply's exception whose __str__ raises)
        text = f"{type(exc).__name__}: <unprintable>"
    return text[:300]
