"""Held-out ansatz families for the barren-plateau verdict (issue 18): none of them was used to fit
the cut-offs (those came from efficient_su2 reps 1-9 and one shared-angle HVA on the Heisenberg chain).

Each builder is a self-contained function of the qubit count, written the way a model writes a reply
(so `inspect.getsource` of it is a reply the sandbox can run and rebuild). Labels: from the literature
where it speaks to these circuits, else from the variance's scaling at 8, 10 and 12 qubits computed here
(`benchmarks/bp_bench.py --heldout`, 120 samples; the decay fitted over 8-12 against the 2-design's over
the same sizes, 0.46 on the Heisenberg chain): a family is labelled a plateau when its variance falls at
least as fast as half the 2-design's there too, i.e. beyond the sizes the judge measures. The figures
are in docs/evaluation.md ("Held-out families").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


def hva_shared(num_qubits):
    """Heisenberg HVA from singlets, one angle per layer and bond group (Wiersema et al. 2020)."""
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector

    theta = ParameterVector("theta", 4)
    qc = QuantumCircuit(num_qubits)
    for q in range(0, num_qubits - 1, 2):
        qc.h(q)
        qc.cx(q, q + 1)
        qc.x(q + 1)
        qc.z(q)
    for layer in range(2):
        for j, start in enumerate((1, 0)):
            for q in range(start, num_qubits - 1, 2):
                qc.rxx(theta[2 * layer + j], q, q + 1)
                qc.ryy(theta[2 * layer + j], q, q + 1)
                qc.rzz(theta[2 * layer + j], q, q + 1)
    return qc


def hva_unshared(num_qubits):
    """The same layers with an angle per gate."""
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector

    theta = ParameterVector("theta", 6 * num_qubits)
    qc = QuantumCircuit(num_qubits)
    for q in range(0, num_qubits - 1, 2):
        qc.h(q)
        qc.cx(q, q + 1)
        qc.x(q + 1)
        qc.z(q)
    k = 0
    for layer in range(2):
        for start in (1, 0):
            for q in range(start, num_qubits - 1, 2):
                qc.rxx(theta[k], q, q + 1)
                qc.ryy(theta[k + 1], q, q + 1)
                qc.rzz(theta[k + 2], q, q + 1)
                k += 3
    return qc


def qaoa_tfim(num_qubits):
    """QAOA-style TFIM ansatz, p = 2, the textbook's rzz(2*gamma) and rx(2*beta)."""
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector

    gamma = ParameterVector("gamma", 2)
    beta = ParameterVector("beta", 2)
    qc = QuantumCircuit(num_qubits)
    qc.h(range(num_qubits))
    for p in range(2):
        for q in range(num_qubits - 1):
            qc.rzz(2 * gamma[p], q, q + 1)
        for q in range(num_qubits):
            qc.rx(2 * beta[p], q)
    return qc


def excitation_preserving_neel(num_qubits):
    """Neel state, then qiskit's particle-number-preserving ansatz, 2 repetitions."""
    from qiskit import QuantumCircuit
    from qiskit.circuit.library import excitation_preserving

    qc = QuantumCircuit(num_qubits)
    qc.x(range(1, num_qubits, 2))
    qc.compose(excitation_preserving(num_qubits, reps=2, entanglement="linear"), inplace=True)
    return qc


def _hea(num_qubits, reps, entangler, rot=("ry", "rz"), scale=1.0):
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector

    theta = ParameterVector("theta", len(rot) * num_qubits * (reps + 1))
    qc = QuantumCircuit(num_qubits)
    k = 0
    for layer in range(reps + 1):
        for q in range(num_qubits):
            for g in rot:
                getattr(qc, g)(scale * theta[k], q)
                k += 1
        if layer < reps:
            for start in (0, 1):  # brickwork
                for q in range(start, num_qubits - 1, 2):
                    getattr(qc, entangler)(q, q + 1)
    return qc


def hea_cz_shallow(num_qubits):
    return _hea(num_qubits, 1, "cz")


def hea_cz_deep(num_qubits):
    return _hea(num_qubits, 12, "cz")


def hea_ecr_shallow(num_qubits):
    return _hea(num_qubits, 1, "ecr", rot=("rx", "rz"))


def hea_ecr_deep(num_qubits):
    return _hea(num_qubits, 12, "ecr", rot=("rx", "rz"))


def controlled_shallow(num_qubits):
    """RY layers joined by a brickwork of controlled-RY rotations (their own angles)."""
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector

    reps = 2
    theta = ParameterVector("theta", num_qubits * (reps + 1) + (num_qubits - 1) * reps)
    qc = QuantumCircuit(num_qubits)
    k = 0
    for layer in range(reps + 1):
        for q in range(num_qubits):
            qc.ry(theta[k], q)
            k += 1
        if layer < reps:
            for start in (0, 1):
                for q in range(start, num_qubits - 1, 2):
                    qc.cry(theta[k], q, q + 1)
                    k += 1
    return qc


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable
    hamiltonian: str
    bp_free: bool        # the label
    source: str          # where the label comes from


FAMILIES: list[Family] = [
    # Not held out: the calibration table's HVA (kept as the shared-angle reference next to its variants).
    Family("hva_shared", hva_shared, "heisenberg", True, "Wiersema et al., PRX Quantum 1, 020319 (2020)"),
    Family("hva_unshared", hva_unshared, "heisenberg", True, "scaling 8-12"),
    Family("qaoa_tfim", qaoa_tfim, "tfim", True, "scaling 8-12"),
    Family("excitation_preserving_neel", excitation_preserving_neel, "heisenberg", True, "scaling 8-12"),
    Family("hea_cz_shallow", hea_cz_shallow, "xy_chain", True, "Cerezo et al., Nat. Commun. 12, 1791 (2021)"),
    # Expected a plateau (McClean et al.), but its variance does not fall like a 2-design's up to 12 qubits
    # (bp_ratio 0.92 at 4 rising to 18 at 12, decay 0.07 against 0.58): labelled by the computed scaling.
    Family("hea_cz_deep", hea_cz_deep, "xy_chain", True, "scaling 8-12 (not McClean's expectation)"),
    Family("hea_ecr_shallow", hea_ecr_shallow, "tfim", True, "Cerezo et al. 2021"),
    Family("hea_ecr_deep", hea_ecr_deep, "tfim", False, "McClean et al. 2018; scaling 8-12 (decay 0.60)"),
    Family("controlled_shallow", controlled_shallow, "heisenberg", True, "scaling 8-12"),
]
# The same circuits with every angle written 2x, 4x or 0.5x (rx(2*beta), Trotter-style t/2): same labels.
for _scale in (2.0, 4.0, 0.5):
    for _reps, _free in ((1, True), (12, False)):
        FAMILIES.append(Family(f"hea_ry_rz_cx_reps{_reps}_x{_scale:g}",
                               lambda n, r=_reps, s=_scale: _hea(n, r, "cx", scale=s), "heisenberg", _free,
                               "Cerezo et al. 2021" if _free else "McClean et al. 2018"))
