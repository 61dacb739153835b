"""The circuit judge: one job kind of the sandbox runner (evaluation.sandbox).

In G (hostile), `collect` finds the reply's QuantumCircuit and serialises it as QPY; in I (trusted,
locked down), `judge` parses that QPY, verifies the circuit and runs the barren-plateau check (and the
optional VQE). Rules: docs/evaluation.md.
"""

from __future__ import annotations

import base64
import io
import math
import os
import time
from dataclasses import asdict
from typing import Any

from evaluation.defaults import BP_RULE, BP_VARIANCE_THRESHOLD, MAX_DEPTH
from evaluation.failures import JUDGE_ERROR
from evaluation.sandbox.kinds import BudgetExceeded, short_exc


def preload() -> None:
    """Imported once in the fork server, inherited by every fork; the Hamiltonians' matrices too."""
    from evaluation import barren, bp_scaling, simulator  # noqa: F401
    from evaluation.hamiltonians import get_hamiltonian, sparse_matrix
    from evaluation.prompts import HAMILTONIANS, QUBIT_COUNTS
    import qiskit.qpy  # noqa: F401
    from qiskit.circuit.library import efficient_su2  # noqa: F401

    from evaluation import verify  # noqa: F401

    for key in HAMILTONIANS:
        for n in QUBIT_COUNTS:
            get_hamiltonian(key, n)
            sparse_matrix(key, n)
    bp_scaling.preload()


SERIALISE_ERROR = "circuit could not be serialised: "
TOO_COMPLEX = "too_complex"
# Operations in all of a circuit's parameter expressions together (qiskit's replay form, which is what binding
# walks): `2*theta` is 1, a Trotter angle 2-3; a nested product can double with each level.
MAX_EXPRESSION_NODES = 20_000


def expression_nodes(circuit, cap: int = MAX_EXPRESSION_NODES) -> int:
    """The size of every parameter expression in `circuit` (gate parameters and the global phase, inside
    custom gates' definitions too), counted until it passes `cap`."""
    from qiskit.circuit import ParameterExpression

    total = 0
    stack = [(circuit, 0)]
    while stack and total <= cap:
        circ, depth = stack.pop()
        values = [circ.global_phase]
        for inst in circ.data:
            op = inst.operation
            values.extend(getattr(op, "params", ()))
            definition = getattr(op, "_definition", None)  # set for custom gates (QPY), never built here
            if definition is not None and depth < 20:
                stack.append((definition, depth + 1))
        for v in values:
            if isinstance(v, ParameterExpression):
                total += max(1, len(getattr(v, "_qpy_replay", ()) or ()))
    return total


def collect(namespace: dict, job: dict, header: dict) -> None:
    """In G: the circuit the reply built, as base64 QPY in header["qpy"]. When the whole answer raised
    or left no circuit, the job's `fallbacks` (single fences) run here one by one, each in a fresh
    namespace; the first that leaves a circuit with the prompt's qubit count and free parameters is
    judged (header["fallback"]: its index); otherwise the whole answer's own failure stands."""
    from qiskit import qpy

    circuit, how = None, "not searched"
    chosen = (namespace, job.get("code"))  # the namespace and code the judged circuit came from
    if header.get("exec_error") is None:
        circuit, how = _find(namespace, job, header)
    if circuit is None and job.get("fallbacks"):
        first_error = header.get("exec_error") or how
        for i, code in enumerate(job["fallbacks"]):
            ns, error = _run_fallback(code)
            if error is not None:
                continue
            probe: dict = {}
            found, found_how = _find(ns, job, probe)
            # A fallback only stands in for the whole answer if it could pass: the prompt's qubit count
            # and free parameters (a 2-qubit toy example next to a broken answer does not).
            if (found is not None and found.num_qubits == int(job["num_qubits"])
                    and found.num_parameters > 0):
                circuit, how = found, found_how
                chosen = (ns, code)
                header.update(exec_error=None, fallback=i, whole_answer_error=str(first_error)[:300])
                break
    header["found_by"] = how
    if circuit is not None:
        buf = io.BytesIO()
        try:
            qpy.dump(circuit, buf)
            header["qpy"] = base64.b64encode(buf.getvalue()).decode()
        except BaseException as exc:  # noqa: BLE001
            header["exec_error"] = SERIALISE_ERROR + short_exc(exc)
    return chosen if "qpy" in header else None


SCALED_FIELDS = ("qpy_scaled", "scaled_by", "scaling_note")


def collect_more(context, job: dict, header: dict) -> dict:
    """In G, after the prompt-size result line went out: the ansatz rebuilt at larger sizes from the
    namespace and code the judged circuit came from (a fallback fence's own, when one was judged),
    time-boxed. If this never finishes, the judge still has the first line (merge_more)."""
    if context is None or job.get("bp_rule", "scaling") != "scaling":
        return {}
    from evaluation.bp_scaling import rebuild_scaled

    namespace, code = context
    scaled: dict = {"found_by": header.get("found_by")}
    rebuild_scaled(namespace, {**job, "code": code}, scaled)
    return {k: scaled[k] for k in SCALED_FIELDS if k in scaled}


def merge_more(header: dict, more: dict) -> dict:
    """The first line plus the rebuilt circuits; when the second line is missing or malformed, a note."""
    if "error" in more:
        return {**header, "scaling_note": "not rebuilt: the rebuild at larger sizes did not finish in time"}
    return {**header, **{k: more[k] for k in SCALED_FIELDS if k in more}}


def _find(namespace: dict, job: dict, header: dict):
    from evaluation.verify import find_circuit

    try:
        return find_circuit(namespace, int(job["num_qubits"]))
    except BaseException as exc:  # noqa: BLE001
        header["exec_error"] = short_exc(exc)
        return None, "not searched"


def _run_fallback(code: str) -> tuple[dict, str | None]:
    """Runs one fallback fence as the sandbox ran the reply (a `__main__` module; sys.exit() is not an
    error). Returns (namespace, the exception as "Type: message" or None)."""
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": "reply.py"}
    try:
        exec(compile(code, "reply.py", "exec", dont_inherit=True), namespace)
    except SystemExit:
        pass
    except BaseException as exc:  # noqa: BLE001 - the reply's own failure
        return namespace, short_exc(exc)
    return namespace, None


def exec_failure(error: str, code: str | None) -> dict:
    """`failure` (and, for a removed API, `removed_api_name` and `removed_in`) of an exception the
    reply's code raised."""
    from evaluation.failures import classify_exec_error, removed_api_of

    kind = "invalid_circuit" if error.startswith(SERIALISE_ERROR) else classify_exec_error(error, code)
    out: dict[str, Any] = {"failure": kind}
    if kind == "removed_api":
        use = removed_api_of(error, code)
        if use is not None:
            out.update(removed_api_name=use.name, removed_in=use.removed_in)
    return out


# Fault injection for tests (cfg["_fault_judge"] = {job id: fault}); the client sets it only when
# QM_SANDBOX_FAULTS=1 (evaluation.scoring), the reply can never reach cfg.
FAULTS = {"raise": "start", "hang": "start", "die": "start", "verify_error": "verify",
          "hang_after_verify": "after_verify", "die_after_verify": "after_verify", "bp_error": "bp",
          "vqe_error": "vqe"}


def _fault(job: dict, cfg: dict, point: str) -> None:
    fault = (cfg.get("_fault_judge") or {}).get(str(job.get("id")))
    if FAULTS.get(fault) != point:
        return
    if fault.startswith("hang"):
        time.sleep(10 ** 6)  # wall clock, no CPU: only the runner's deadline ends it
    if fault.startswith("die"):
        os._exit(1)
    raise RuntimeError(f"injected judge fault {fault!r}")


def _result(**fields: Any) -> dict:
    out: dict[str, Any] = {"verification_pass": False, "bp_free": None, "bp_status": None, "failure": None,
                           "judge_error": None}
    out.update(fields)
    return out


def failed_run(job: dict, error: str, failure: str, partial: dict | None = None) -> dict:
    """No verdict from judge(). `failure` is the reply's own kind, or JUDGE_ERROR: then nothing is
    decided (verification_pass null) unless `partial` holds what judge() had reached (its
    verification), which is kept; `judge_error` says why the judge stopped."""
    if failure != JUDGE_ERROR:
        return _result(error=error, failure=failure)
    if partial:
        kept = _result(**{k: v for k, v in partial.items() if k not in ("id", "partial")})
        if kept.get("bp_status") != "checked":  # stopped in the BP check (else: in the VQE)
            kept.update(bp_free=None, bp_status=JUDGE_ERROR)
        return kept | {"judge_error": error}
    return _result(verification_pass=None, error=error, failure=JUDGE_ERROR, judge_error=error)


def _no_circuit_failure(found_by: str, code: str | None = None) -> str:
    """no_circuit, or the kind of what the reply's own function raised while it was searched."""
    from evaluation.failures import classify_exec_error
    from evaluation.verify import SEARCH_RAISED

    if SEARCH_RAISED in found_by:
        raised = found_by.split(SEARCH_RAISED, 1)[1].split(" raised ", 1)[-1]
        return classify_exec_error(raised, code) or "no_circuit"
    return "no_circuit"


def judge(job: dict, cfg: dict, header: dict, limits) -> dict:
    """In I: verification, BP check and VQE from G's header (untrusted bytes only). After a passed
    verification a partial result line is emitted (cfg["_emit_partial"], set by the runner) so that
    a later timeout or death of the judge keeps it."""
    from qiskit import qpy

    from evaluation import barren, bp_scaling, simulator
    from evaluation.hamiltonians import get_hamiltonian, sparse_matrix
    from evaluation.verify import NOT_FOUND, verify_circuit

    _fault(job, cfg, "start")
    out = _result()
    if header.get("exit") is not None:
        out["sys_exit"] = str(header["exit"])[:200]
    if header.get("exec_error"):
        out["error"] = str(header["exec_error"])[:300]
        out.update(exec_failure(out["error"], job.get("code")))
        return out
    out["found_by"] = str(header.get("found_by"))[:100]
    if isinstance(header.get("fallback"), int) and not isinstance(header.get("fallback"), bool):
        out["fallback"] = header["fallback"]
        out["whole_answer_error"] = str(header.get("whole_answer_error"))[:300]
    payload = header.get("qpy")
    if not isinstance(payload, str):
        found_by = str(header.get("found_by") or NOT_FOUND)
        out["error"] = (found_by if found_by.startswith(NOT_FOUND) else NOT_FOUND)[:300]
        out["failure"] = _no_circuit_failure(out["error"], job.get("code"))
        return out
    try:
        circuits = qpy.load(io.BytesIO(base64.b64decode(payload, validate=True)))
        circuit = circuits[0]
        nodes = expression_nodes(circuit)
        if nodes > MAX_EXPRESSION_NODES:
            raise BudgetExceeded(f"its parameter expressions hold more than {MAX_EXPRESSION_NODES} operations")
    except BudgetExceeded as exc:
        out.update(error=f"too complex to judge: {exc}"[:300], failure=TOO_COMPLEX)
        return out
    except Exception as exc:  # noqa: BLE001  (the reply process wrote it: the reply's doing)
        out.update(error="invalid QPY from the reply process: " + short_exc(exc), failure="invalid_circuit")
        return out
    n = int(job["num_qubits"])
    try:
        _fault(job, cfg, "verify")
        ver, flat = verify_circuit(circuit, n, job.get("constraint") or "", cfg.get("max_depth", MAX_DEPTH))
    except BudgetExceeded as exc:
        out.update(error=f"too complex to judge: {exc}"[:300], failure=TOO_COMPLEX)
        return out
    except Exception as exc:  # noqa: BLE001
        reason = "verification failed: " + short_exc(exc)
        out.update(verification_pass=None, error=reason, failure=JUDGE_ERROR, judge_error=reason)
        return out
    out.update(asdict(ver))
    if not ver.verification_pass:
        return out
    emit = cfg.get("_emit_partial")
    if callable(emit):
        emit(out)
    _fault(job, cfg, "after_verify")
    key = job["hamiltonian"]
    try:
        _fault(job, cfg, "bp")
        hmat = sparse_matrix(key, n)
        prog = simulator.compile_circuit(flat)  # once, for the BP check and the VQE
        rule = job.get("bp_rule") or cfg.get("bp_rule", BP_RULE)
        bp = barren.detect_barren_plateau(prog, hmat, num_samples=bp_scaling.verdict_samples(n, cfg, rule),
                                          threshold=cfg.get("bp_threshold", BP_VARIANCE_THRESHOLD),
                                          seed=cfg.get("seed", 0))
        if not (math.isfinite(bp.bp_variance) and math.isfinite(bp.max_variance)):
            raise simulator.NonFiniteAngle("non-finite gradient variance at the sampled parameters")
        out.update(bp_status="checked", bp_variance=bp.bp_variance, bp_max_variance=bp.max_variance,
                   bp_dead_parameters=bp.dead_parameters)
        out.update(bp_scaling.judge_bp(job, cfg, header, prog, hmat, bp))  # bp_free, bp_ratio, bp_scaling...
    except simulator.NonFiniteAngle as exc:  # the reply's angles: the circuit is invalid after all
        out.update(verification_pass=False, bp_free=None, bp_status=None, failure="invalid_circuit",
                   error=f"invalid circuit: {exc}"[:300])
    except simulator.UnsupportedCircuit as exc:  # the reply's structure: documented, not a plateau verdict
        out.update(bp_free=None, bp_status="unsupported", error=f"barren-plateau check: {exc}"[:300])
    except BudgetExceeded as exc:  # what the reply built spent the judge's budget: not certified trainable
        out.update(bp_free=False, bp_status=TOO_COMPLEX, error=f"barren-plateau check too complex: {exc}"[:300])
        return out
    except Exception as exc:  # noqa: BLE001
        reason = "barren-plateau check failed: " + short_exc(exc)
        out.update(bp_free=None, bp_status=JUDGE_ERROR, error=reason, judge_error=reason)
    if job.get("vqe") and out["bp_status"] == "checked":
        if callable(emit):
            emit(out)
        try:
            _fault(job, cfg, "vqe")
            vq = barren.run_vqe(prog, hmat, get_hamiltonian(key, n).ground_energy)
            if not math.isfinite(vq.energy_error):
                raise ValueError(f"non-finite energy {vq.energy}")
            out.update(energy_error=vq.energy_error, vqe_energy=vq.energy)
        except BudgetExceeded as exc:  # BP verdict kept; no VQE figure for a circuit too costly to optimise
            out.update(error=f"VQE too complex: {exc}"[:300])
        except Exception as exc:  # noqa: BLE001  (BP verdict kept; the VQE figure is undecided)
            reason = "VQE failed: " + short_exc(exc)
            out.update(error=reason, judge_error=reason)
    return out
