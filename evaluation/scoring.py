"""Score replies: extract code, syntax check, then sandboxed execution + verification + BP check.

The heavy lifting happens in the sandbox runner's fork server (evaluation.sandbox.run_jobs) started with a scrubbed
environment, so neither reply code nor the judge ever shares memory with this process (which may
hold an API key).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Iterable

from evaluation.defaults import BP_NUM_SAMPLES, BP_RULE, BP_RULES, MAX_DEPTH
from evaluation.extract import extract_code, extract_program, syntax_ok  # noqa: F401 (re-exported)
from evaluation.failures import finish_failure
from evaluation.prompts import HAMILTONIANS
from evaluation.sandbox import SandboxLimits, run_jobs
from evaluation.sandbox.preload import REPLY_STACK, modules_used

if TYPE_CHECKING:
    from evaluation.sandbox import Session

log = logging.getLogger(__name__)

REPLY_FIELDS = ("id", "hamiltonian", "num_qubits", "constraint", "prompt", "reply", "model", "latency_s",
                "finish_reason")
RESULT_FIELDS = ("code", "syntax_valid", "verification_pass", "bp_free", "num_qubits_found", "depth",
                 "num_parameters", "gate_counts", "constraint_satisfied", "bp_variance", "energy_error", "error",
                 "failure", "bp_status", "judge_error", "request_error")
_EXTRA_FIELDS = ("found_by", "bp_max_variance", "bp_dead_parameters", "vqe_energy", "sys_exit",
                 "exec_seconds", "stdout_tail", "stderr_tail", "memory_peak_bytes")
# Why a reply failed (evaluation.failures; docs/evaluation.md, "failure") and how its code was put together.
FAILURE_FIELDS = ("failure", "removed_api_name", "removed_in", "removed_apis", "code_rule", "fallback",
                  "whole_answer_error")
BP_FIELDS = ("bp_rule", "bp_basis", "bp_ratio", "bp_reference", "bp_scaling", "bp_decay", "bp_decay_reference",
             "bp_scaled_by", "bp_scaling_note", "bp_ratio_ci95", "bp_decay_ci95", "bp_plateau_fraction", "bp_seed",
             "bp_rebuild", "bp_samples")  # the BP verdict (evaluation.bp_scaling.judge_bp)


MAX_QUBITS = 16  # exact statevector BP check: 2**16 amplitudes x 30 samples is still cheap
FAULTS_ENV = "QM_SANDBOX_FAULTS"  # "1": a record's "_fault_judge" is passed to the judge (tests only)


def _base_result(record: dict) -> dict[str, Any]:
    out = {k: record.get(k) for k in REPLY_FIELDS if k in record or k != "prompt"}
    out.update({k: None for k in RESULT_FIELDS})
    out["syntax_valid"] = False
    out["verification_pass"] = False
    out["gate_counts"] = {}
    return out


def _validate_record(record: dict) -> None:
    missing = [k for k in ("id", "hamiltonian", "num_qubits", "reply") if k not in record]
    if missing:
        raise ValueError(f"reply record {record.get('id', '?')!r} lacks {', '.join(missing)}")
    if record["hamiltonian"] not in HAMILTONIANS:
        raise ValueError(f"reply record {record['id']!r}: unknown hamiltonian {record['hamiltonian']!r} "
                         f"(expected one of {', '.join(HAMILTONIANS)})")
    n = record["num_qubits"]
    if not isinstance(n, int) or isinstance(n, bool) or not 2 <= n <= MAX_QUBITS:
        raise ValueError(f"reply record {record['id']!r}: num_qubits must be an integer in [2, {MAX_QUBITS}]")


def score_reply(record: dict, **opts) -> dict:
    return score_replies([record], **opts)[0]


# The cfg keys that decide a verdict: a kept-alive session must have been started with the same ones.
VERDICT_CFG_KEYS = ("limits", "bp_samples", "seed", "max_depth", "bp_rule", "bp_threshold")


def circuit_cfg(*, workers: int | None = None, limits: SandboxLimits | None = None,
                bp_threshold: float | None = None, bp_samples: int = BP_NUM_SAMPLES, seed: int = 0,
                max_depth: int = MAX_DEPTH, bp_rule: str = BP_RULE,
                preload_modules: list[str] | None = None) -> dict[str, Any]:
    """The fork server's cfg for circuit jobs, as `score_replies` builds it. `preload_modules` None: the
    whole reply stack (what a kept-alive session wants, since later calls' code is not known yet)."""
    cfg: dict[str, Any] = {"workers": workers or os.cpu_count() or 1, "limits": asdict(limits or SandboxLimits()),
                           "bp_samples": bp_samples, "seed": seed, "max_depth": max_depth, "bp_rule": bp_rule,
                           "kinds": ["circuit"]}
    if bp_threshold is not None:
        cfg["bp_threshold"] = bp_threshold
    if preload_modules is None:
        preload_modules = list(dict.fromkeys(m for _, mods in REPLY_STACK for m in mods))
    cfg["preload_modules"] = preload_modules
    return cfg


def _check_session(session: Session, cfg: dict[str, Any], kind: str) -> None:
    """A session scores exactly as a fresh server would, or not at all."""
    differ = [k for k in VERDICT_CFG_KEYS if session.cfg.get(k) != cfg.get(k)]
    if differ or kind not in (session.cfg.get("kinds") or [kind]):
        raise ValueError(f"sandbox session was started with other settings ({', '.join(differ) or 'kinds'}) "
                         "than this scoring call asks for")


def score_replies(records: Iterable[dict], *, workers: int | None = None, vqe: bool = False,
                  progress: bool = False, limits: SandboxLimits | None = None, bp_threshold: float | None = None,
                  bp_samples: int = BP_NUM_SAMPLES, seed: int = 0, max_depth: int = MAX_DEPTH,
                  info: dict | None = None, bp_rule: str = BP_RULE,
                  session: Session | None = None) -> list[dict]:
    """Results in input order. `info`, if given, receives the sandbox's isolation report. `session`: a
    kept-alive fork server (evaluation.sandbox.Session) started with `circuit_cfg(...)` of the same settings;
    its `workers` are used, and the verdicts are the ones a fresh server gives."""
    if bp_rule not in BP_RULES:
        raise ValueError(f"unknown BP rule {bp_rule!r}; expected one of {', '.join(BP_RULES)}")
    records = list(records)
    results: list[dict] = []
    jobs: list[dict] = []
    faults: dict[str, str] = {}
    for i, rec in enumerate(records):
        _validate_record(rec)
        res = _base_result(rec)
        results.append(res)
        if rec.get("finish_reason") == "error":  # the endpoint refused the request: nothing to score
            res.update(syntax_valid=None, verification_pass=None,
                       request_error=str(rec.get("error") or "request failed")[:300])
            res["error"] = res["request_error"]
            continue
        program = extract_program(rec.get("reply") or "")
        code = program.code
        res["code"] = code
        res["code_rule"] = program.rule
        ok, err = syntax_ok(code)
        res["syntax_valid"] = ok
        if ok:
            jobs.append({"id": i, "kind": "circuit", "code": code, "num_qubits": int(rec["num_qubits"]),
                         "hamiltonian": rec["hamiltonian"], "constraint": rec.get("constraint") or "", "vqe": vqe,
                         "fallbacks": program.fallbacks, "bp_rule": bp_rule,
                         "timeout_s": (limits or SandboxLimits()).timeout_s})
            if os.environ.get(FAULTS_ENV) == "1" and rec.get("_fault_judge"):
                faults[str(i)] = str(rec["_fault_judge"])
        else:
            res["error"] = err
    if jobs:
        cfg = circuit_cfg(workers=workers, limits=limits, bp_threshold=bp_threshold, bp_samples=bp_samples,
                          seed=seed, max_depth=max_depth, bp_rule=bp_rule,
                          preload_modules=modules_used(c for job in jobs for c in (job["code"], *job["fallbacks"])))
        if session is not None:
            _check_session(session, cfg, "circuit")
            if faults:
                raise ValueError("judge fault injection needs a fresh sandbox server, not a session")
            outputs: Iterable[tuple[int, dict]] = session.run(jobs).items()
            if info is not None:
                info.update(session.isolation)
        else:
            if faults:
                cfg["_fault_judge"] = faults
            outputs = run_jobs(jobs, cfg, progress=progress, desc="scoring", info=info)
        for job_id, out in outputs:
            res = results[job_id]
            for k in RESULT_FIELDS + _EXTRA_FIELDS + FAILURE_FIELDS + BP_FIELDS:
                if k in out and k != "code":
                    res[k] = out[k]
            if not res.get("verification_pass"):
                res["bp_free"] = None
    by_id = {job["id"]: job for job in jobs}
    for i, res in enumerate(results):
        finish_failure(res, by_id.get(i, {}).get("fallbacks") or [], expected_qubits=int(records[i]["num_qubits"]),
                       max_depth=max_depth)
    return results
