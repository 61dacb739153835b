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


def collect(namespace: dict, job: dict, header: dict) -> None:
    """In G: the circuit the reply built, as base64 QPY in header["qpy"]."""
    from qiskit import qpy

    from evaluation.verify import find_circuit

    circuit, how = None, "not searched"
    if header.get("exec_error") is None:
        try:
            circuit, how = find_circuit(namespace, int(job["num_qubits"]))
        except BaseException as exc:  # noqa: BLE001
            header["exec_error"] = short_exc(exc)
    header["found_by"] = how
    if circuit is not None:
        buf = io.BytesIO()
        try:
            qpy.dump(circuit, buf)
            header["qpy"] = base64.b64encode(buf.getvalue()).decode()
        except BaseException as exc:  # noqa: BLE001
            header["exec_error"] = "circuit could not be serialised: " + short_exc(exc)
        if "qpy" in header and job.get("bp_rule", "scaling") == "scaling":  # the ansatz at larger sizes (time-boxed)
            from evaluation.bp_scaling import rebuild_scaled

            rebuild_scaled(namespace, job, header)


def failed_run(job: dict, error: str, failure: str) -> dict:
    return {"verification_pass": False, "bp_free": None, "error": error, "failure": failure}


def judge(job: dict, cfg: dict, header: dict, limits) -> dict:
    """In I: verification, BP check and VQE from G's header (untrusted bytes only)."""
    from qiskit import qpy

    from evaluation import barren, bp_scaling, simulator
    from evaluation.hamiltonians import get_hamiltonian, sparse_matrix
    from evaluation.verify import verify_circuit

    out: dict[str, Any] = {"verification_pass": False, "bp_free": None}
    if header.get("exit") is not None:
        out["sys_exit"] = str(header["exit"])[:200]
    if header.get("exec_error"):
        out["error"] = str(header["exec_error"])[:300]
        return out
    out["found_by"] = str(header.get("found_by"))[:100]
    payload = header.get("qpy")
    if not isinstance(payload, str):
        out["error"] = "no QuantumCircuit found"
        return out
    try:
        circuits = qpy.load(io.BytesIO(base64.b64decode(payload, validate=True)))
        circuit = circuits[0]
    except Exception as exc:  # noqa: BLE001
        out["error"] = "invalid QPY from the reply process: " + short_exc(exc)
        return out
    n = int(job["num_qubits"])
    try:
        ver, flat = verify_circuit(circuit, n, job.get("constraint") or "", cfg.get("max_depth", MAX_DEPTH))
    except Exception as exc:  # noqa: BLE001
        out["error"] = "verification failed: " + short_exc(exc)
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
        out.update(bp_variance=bp.bp_variance, bp_max_variance=bp.max_variance,
                   bp_dead_parameters=bp.dead_parameters)
        out.update(bp_scaling.judge_bp(job, cfg, header, bp.bp_variance))  # bp_free, bp_ratio, bp_scaling...
        if job.get("vqe"):
            vq = barren.run_vqe(prog, hmat, get_hamiltonian(key, n).ground_energy)
            out.update(energy_error=vq.energy_error, vqe_energy=vq.energy)
    except Exception as exc:  # noqa: BLE001
        out["error"] = "barren-plateau check failed: " + short_exc(exc)
    return out
