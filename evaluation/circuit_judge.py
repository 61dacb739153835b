"""The circuit judge: one job kind of the sandbox runner (evaluation.sandbox).

In G (hostile), `collect` finds the reply's QuantumCircuit and serialises it as QPY; in I (trusted,
locked down), `judge` parses that QPY, verifies the circuit and runs the barren-plateau check (and the
optional VQE). Rules: docs/evaluation.md.
"""

from __future__ import annotations

import base64
import io
from dataclasses import asdict
from typing import Any

from evaluation.defaults import BP_NUM_SAMPLES, BP_VARIANCE_THRESHOLD, MAX_DEPTH
from evaluation.sandbox import short_exc


def preload() -> None:
    """Imported once in the fork server, inherited by every fork; the Hamiltonians' matrices too."""
    from evaluation import barren, simulator  # noqa: F401
    from evaluation.hamiltonians import get_hamiltonian, sparse_matrix
    from evaluation.prompts import HAMILTONIANS, QUBIT_COUNTS
    import qiskit.qpy  # noqa: F401
    from qiskit.circuit.library import efficient_su2  # noqa: F401

    from evaluation import verify  # noqa: F401

    for key in HAMILTONIANS:
        for n in QUBIT_COUNTS:
            get_hamiltonian(key, n)
            sparse_matrix(key, n)


SERIALISE_ERROR = "circuit could not be serialised: "


def collect(namespace: dict, job: dict, header: dict) -> None:
    """In G: the circuit the reply built, as base64 QPY in header["qpy"]. When the whole answer raised
    or left no circuit, the job's `fallbacks` (single fences) run here one by one, each in a fresh
    namespace; the first that leaves a circuit with the prompt's qubit count and free parameters is
    judged (header["fallback"]: its index); otherwise the whole answer's own failure stands."""
    from qiskit import qpy

    circuit, how = None, "not searched"
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


def failed_run(job: dict, error: str, failure: str) -> dict:
    return {"verification_pass": False, "bp_free": None, "error": error, "failure": failure}


def judge(job: dict, cfg: dict, header: dict, limits) -> dict:
    """In I: verification, BP check and VQE from G's header (untrusted bytes only)."""
    from qiskit import qpy

    from evaluation import barren, simulator
    from evaluation.hamiltonians import get_hamiltonian, sparse_matrix
    from evaluation.verify import verify_circuit

    out: dict[str, Any] = {"verification_pass": False, "bp_free": None}
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
        out["error"] = "no QuantumCircuit found"
        out["failure"] = "no_circuit"
        return out
    try:
        circuits = qpy.load(io.BytesIO(base64.b64decode(payload, validate=True)))
        circuit = circuits[0]
    except Exception as exc:  # noqa: BLE001
        out["error"] = "invalid QPY from the reply process: " + short_exc(exc)
        out["failure"] = "invalid_circuit"
        return out
    n = int(job["num_qubits"])
    try:
        ver, flat = verify_circuit(circuit, n, job.get("constraint") or "", cfg.get("max_depth", MAX_DEPTH))
    except Exception as exc:  # noqa: BLE001
        out["error"] = "verification failed: " + short_exc(exc)
        out["failure"] = "invalid_circuit"
        return out
    out.update(asdict(ver))
    if not ver.verification_pass:
        return out
    key = job["hamiltonian"]
    try:
        hmat = sparse_matrix(key, n)
        prog = simulator.compile_circuit(flat)  # once, for the BP check and the VQE
        bp = barren.detect_barren_plateau(prog, hmat, num_samples=cfg.get("bp_samples", BP_NUM_SAMPLES),
                                          threshold=cfg.get("bp_threshold", BP_VARIANCE_THRESHOLD),
                                          seed=cfg.get("seed", 0))
        out.update(bp_free=not bp.has_barren_plateau, bp_variance=bp.bp_variance,
                   bp_max_variance=bp.max_variance, bp_dead_parameters=bp.dead_parameters)
        if job.get("vqe"):
            vq = barren.run_vqe(prog, hmat, get_hamiltonian(key, n).ground_energy)
            out.update(energy_error=vq.energy_error, vqe_energy=vq.energy)
    except Exception as exc:  # noqa: BLE001
        out["error"] = "barren-plateau check failed: " + short_exc(exc)
    return out
