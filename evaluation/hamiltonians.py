"""Open-chain spin Hamiltonians as qiskit SparsePauliOp, with exact ground energies.

Conventions (documented in docs/evaluation.md):
- XY chain:        H = sum_{i=0}^{n-2} (X_i X_{i+1} + Y_i Y_{i+1})
- Heisenberg:      H = sum_{i=0}^{n-2} (X_i X_{i+1} + Y_i Y_{i+1} + Z_i Z_{i+1})
- TFIM:            H = sum_{i=0}^{n-2} Z_i Z_{i+1} + h * sum_{i=0}^{n-1} X_i,  h = TFIM_FIELD = 1.0
  (the critical point, the hardest case for a short ansatz). All couplings +1 (antiferromagnetic).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from qiskit.quantum_info import SparsePauliOp

from evaluation.prompts import HAMILTONIANS

TFIM_FIELD = 1.0
EXACT_DENSE_MAX_QUBITS = 10


@dataclass(frozen=True)
class Hamiltonian:
    key: str
    name: str
    num_qubits: int
    operator: SparsePauliOp
    ground_energy: float


def _bond_terms(n: int, paulis: str) -> list[tuple[str, list[int], float]]:
    return [(p + p, [i, i + 1], 1.0) for i in range(n - 1) for p in paulis]


def build_operator(key: str, num_qubits: int, field: float = TFIM_FIELD) -> SparsePauliOp:
    if num_qubits < 2:
        raise ValueError("a chain needs at least 2 qubits")
    if key == "xy_chain":
        terms = _bond_terms(num_qubits, "XY")
    elif key == "heisenberg":
        terms = _bond_terms(num_qubits, "XYZ")
    elif key == "tfim":
        terms = _bond_terms(num_qubits, "Z") + [("X", [i], field) for i in range(num_qubits)]
    else:
        raise KeyError(f"unknown Hamiltonian {key!r}; expected one of {sorted(HAMILTONIANS)}")
    return SparsePauliOp.from_sparse_list(terms, num_qubits=num_qubits).simplify()


def exact_ground_energy(op: SparsePauliOp) -> float:
    """Dense eigvalsh up to 10 qubits (1024x1024, ~0.3 s), sparse Lanczos above."""
    if op.num_qubits <= EXACT_DENSE_MAX_QUBITS:
        return float(np.linalg.eigvalsh(op.to_matrix()).min())
    from scipy.sparse.linalg import eigsh

    vals = eigsh(op.to_matrix(sparse=True), k=1, which="SA", return_eigenvectors=False)
    return float(vals.min())


@lru_cache(maxsize=64)
def _operator(key: str, num_qubits: int) -> SparsePauliOp:
    return build_operator(key, num_qubits)


@lru_cache(maxsize=64)
def get_hamiltonian(key: str, num_qubits: int) -> Hamiltonian:
    """The operator with its exact ground energy (the costly part; only the VQE needs it)."""
    op = _operator(key, num_qubits)
    return Hamiltonian(key=key, name=HAMILTONIANS[key], num_qubits=num_qubits, operator=op,
                       ground_energy=exact_ground_energy(op))


@lru_cache(maxsize=64)
def sparse_matrix(key: str, num_qubits: int):
    """CSR matrix of the operator in qiskit's little-endian basis (cached: the simulator reuses it).
    Does not compute the ground energy."""
    return _operator(key, num_qubits).to_matrix(sparse=True, force_serial=True).tocsr()
