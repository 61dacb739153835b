"""Barren-plateau check and the optional short VQE, on the exact simulator (evaluation.simulator).

Decision rule (docs/evaluation.md): draw `num_samples` (30) parameter vectors uniformly in [0, 2*pi),
compute the exact gradient of <H> for every parameter at each sample, take the variance over samples
for each parameter, and average over parameters -> `bp_variance`. The circuit has a barren plateau
iff bp_variance < BP_VARIANCE_THRESHOLD (1e-3). A flat landscape (all gradients 0) gives 0 and is
flagged; a shallow RY+CX ansatz at 4-8 qubits gives ~0.1-1 and is not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qiskit.circuit import QuantumCircuit

from evaluation import simulator
from evaluation.defaults import BP_NUM_SAMPLES, BP_VARIANCE_THRESHOLD


@dataclass
class BPResult:
    has_barren_plateau: bool
    bp_variance: float              # mean over parameters of Var_samples[dE/dtheta_k]
    max_variance: float
    dead_parameters: int            # parameters whose gradient variance is < 1e-12 (never matter)
    num_parameters: int
    num_samples: int
    threshold: float
    variances: list[float]


def sample_parameters(num_parameters: int, num_samples: int = BP_NUM_SAMPLES, seed: int | None = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 2 * np.pi, size=(num_samples, num_parameters))


def _program(circuit: QuantumCircuit | simulator.Program) -> simulator.Program:
    """An already compiled program passes through (so a caller can compile once for several checks)."""
    return circuit if isinstance(circuit, simulator.Program) else simulator.compile_circuit(circuit)


def _as_matrix(hmat):
    """A SparsePauliOp becomes a CSR matrix; a matrix passes through."""
    if hasattr(hmat, "to_matrix"):
        hmat = hmat.to_matrix(sparse=True).tocsr()
    return hmat


def gradient_variances(circuit: QuantumCircuit | simulator.Program, hmat, samples: np.ndarray) -> np.ndarray:
    _, grads = simulator.energy_and_gradient(_program(circuit), hmat, samples)
    return grads.var(axis=0)


def detect_barren_plateau(circuit: QuantumCircuit | simulator.Program, hmat, *, num_samples: int = BP_NUM_SAMPLES,
                          threshold: float = BP_VARIANCE_THRESHOLD, seed: int | None = 0,
                          samples: np.ndarray | None = None) -> BPResult:
    """`circuit`: a QuantumCircuit or a compiled `simulator.Program`; `hmat`: the Hamiltonian as a
    (sparse) matrix or a SparsePauliOp."""
    hmat = _as_matrix(hmat)
    prog = _program(circuit)
    if prog.num_parameters == 0:
        raise ValueError("circuit has no free parameters")
    if samples is None:
        samples = sample_parameters(prog.num_parameters, num_samples, seed)
    var = gradient_variances(prog, hmat, samples)
    mean_var = float(var.mean())
    return BPResult(has_barren_plateau=bool(mean_var < threshold), bp_variance=mean_var,
                    max_variance=float(var.max()), dead_parameters=int((var < 1e-12).sum()),
                    num_parameters=prog.num_parameters, num_samples=int(samples.shape[0]),
                    threshold=threshold, variances=[float(v) for v in var])


@dataclass
class VQEResult:
    energy: float
    ground_energy: float
    energy_error: float             # energy - ground_energy (>= 0 up to rounding)
    starts: int
    evaluations: int


def run_vqe(circuit: QuantumCircuit | simulator.Program, hmat, ground_energy: float, *, starts: int = 3,
            maxiter: int = 200, seed: int = 1) -> VQEResult:
    """L-BFGS-B with exact adjoint gradients from a few random starts; keeps the lowest energy.
    `circuit` and `hmat` as for detect_barren_plateau."""
    from scipy.optimize import minimize

    hmat = _as_matrix(hmat)
    prog = _program(circuit)
    rng = np.random.default_rng(seed)
    best = np.inf
    evals = 0

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        e, g = simulator.energy_and_gradient(prog, hmat, x[None, :])
        return float(e[0]), g[0]

    for _ in range(starts):
        x0 = rng.uniform(0.0, 2 * np.pi, size=prog.num_parameters)
        res = minimize(fun, x0, jac=True, method="L-BFGS-B", options={"maxiter": maxiter})
        evals += int(res.nfev)
        best = min(best, float(res.fun))
    return VQEResult(energy=best, ground_energy=ground_energy, energy_error=best - ground_energy,
                     starts=starts, evaluations=evals)
