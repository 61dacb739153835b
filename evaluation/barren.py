"""Barren-plateau check and the optional short VQE, on the exact simulator (evaluation.simulator).

Measurement (docs/evaluation.md): draw `num_samples` (30) parameter vectors uniformly in [0, 2*pi),
compute the exact gradient of <H> for every parameter at each sample, take the variance over samples
for each parameter, and average over parameters -> `bp_variance`.

Reference (`haar_gradient_variance`): the same quantity for a circuit whose two halves around the
parameter are unitary 2-designs, in closed form (derivation in docs/evaluation.md; McClean et al. 2018,
Cerezo et al. 2021, Holmes et al. 2022):  Var = d^2 * s / (2 (d+1) (d^2-1)),  d = 2**n,
s = sum of |c_P|^2 over the non-identity Pauli strings of H  (= Tr(H_0^2)/d).

Verdict (`bp_verdict`): rule `scaling` (default) compares the variance with that reference at the
prompt's size and, where the reply's ansatz could be rebuilt larger, its decay with n with the
reference's decay; rule `absolute` is the seed's (plateau iff bp_variance < 1e-3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from qiskit.circuit import QuantumCircuit

from evaluation import simulator
from evaluation.defaults import (BP_DECAY_FRACTION, BP_FIT_MIN_QUBITS, BP_FLAT_RATIO, BP_NUM_SAMPLES, BP_RATIO_CUTOFF,
                                 BP_RATIO_MIN_QUBITS, BP_RULES, BP_VARIANCE_THRESHOLD)


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


def two_design_gradient_variance(pauli_weight: float, num_qubits: int) -> float:
    """Var[dE/dtheta] for E = <0|U+^ R(theta)^ ... |0>, R = exp(-i theta P/2) with P a Pauli string,
    when U- (before R) and U+ (after R) are independent unitary 2-designs on all n qubits:
    d^2 s / (2 (d+1) (d^2-1)) with d = 2^n and s = Tr(H_0^2)/d = sum_{P != I} |c_P|^2."""
    d = float(2 ** num_qubits)
    return d * d * pauli_weight / (2.0 * (d + 1.0) * (d * d - 1.0))


def pauli_weight(op) -> float:
    """sum |c_P|^2 over the non-identity Pauli strings of a SparsePauliOp (after simplify)."""
    op = op.simplify()
    nonid = np.logical_or(op.paulis.x, op.paulis.z).any(axis=1)
    return float(np.sum(np.abs(op.coeffs[nonid]) ** 2))


@lru_cache(maxsize=256)
def haar_gradient_variance(key: str, num_qubits: int) -> float:
    """The 2-design reference for one of the judge's Hamiltonians (evaluation.hamiltonians)."""
    from evaluation.hamiltonians import build_operator

    return two_design_gradient_variance(pauli_weight(build_operator(key, num_qubits)), num_qubits)


@dataclass
class BPVerdict:
    """How `bp_free` was decided. basis: "flat", "scaling", "ratio", "undecided" (rule scaling) or
    "absolute" (rule absolute)."""
    bp_free: bool
    rule: str
    basis: str
    ratio: float                       # variance / 2-design variance at the prompt's size
    reference: float                   # the 2-design variance at the prompt's size
    scaling: list[dict] = field(default_factory=list)  # [{num_qubits, variance, ratio}], prompt's size first
    decay: float | None = None         # fitted b in variance ~ exp(-b n), per qubit (natural log)
    decay_reference: float | None = None  # the same fit of the 2-design reference over the same sizes


def _decay(sizes: list[int], values: list[float]) -> float:
    """Least-squares slope of ln(value) against n, sign flipped (numpy.polyfit, degree 1)."""
    return float(-np.polyfit(np.asarray(sizes, float), np.log(np.asarray(values, float)), 1)[0])


def bp_verdict(key: str, num_qubits: int, variance: float, scaled: dict[int, float] | None = None, *,
               rule: str = "scaling", threshold: float = BP_VARIANCE_THRESHOLD) -> BPVerdict:
    """`variance`: bp_variance at the prompt's size; `scaled`: {larger size: bp_variance} of the same
    ansatz rebuilt larger (empty when the reply does not allow it). Rule `scaling`, in order:
    1. flat: at some measured size variance < BP_FLAT_RATIO x reference -> plateau;
    2. with scaled sizes (two or more sizes >= BP_FIT_MIN_QUBITS): plateau iff the fitted decay over
       those sizes >= BP_DECAY_FRACTION x the reference's decay over the same sizes, or the ratio <= BP_RATIO_CUTOFF at a measured size >= BP_RATIO_MIN_QUBITS;
    3. without: plateau iff n >= BP_RATIO_MIN_QUBITS and ratio <= BP_RATIO_CUTOFF;
    4. otherwise undecided: no plateau can be told from a single size below 8 qubits (there even a
       Haar-random circuit's variance is within ~1.3-2.5x of a one-layer ansatz's) -> bp_free = True
       (not flat), the seed's rule's answer, reported with basis "undecided"."""
    if rule not in BP_RULES:
        raise ValueError(f"unknown BP rule {rule!r}; expected one of {', '.join(BP_RULES)}")
    if not math.isfinite(variance):
        raise ValueError("gradient variance is not finite")
    ref = haar_gradient_variance(key, num_qubits)
    points = [(num_qubits, float(variance))] + sorted((int(m), float(v)) for m, v in (scaled or {}).items()
                                                        if math.isfinite(v))
    table = [{"num_qubits": m, "variance": v, "ratio": v / haar_gradient_variance(key, m)} for m, v in points]
    out = BPVerdict(bp_free=True, rule=rule, basis=rule, ratio=variance / ref, reference=ref, scaling=table)
    if rule == "absolute":
        out.bp_free = bool(variance >= threshold)
        return out
    if any(p["ratio"] < BP_FLAT_RATIO for p in table):
        out.bp_free, out.basis = False, "flat"
        return out
    near_haar = any(p["ratio"] <= BP_RATIO_CUTOFF for p in table if p["num_qubits"] >= BP_RATIO_MIN_QUBITS)
    fit = [p for p in table if p["num_qubits"] >= BP_FIT_MIN_QUBITS]
    if len(table) >= 2 and len(fit) >= 2:
        sizes = [p["num_qubits"] for p in fit]
        out.decay = _decay(sizes, [p["variance"] for p in fit])
        out.decay_reference = _decay(sizes, [haar_gradient_variance(key, m) for m in sizes])
        out.basis = "scaling"
        out.bp_free = not (out.decay >= BP_DECAY_FRACTION * out.decay_reference or near_haar)
    elif num_qubits >= BP_RATIO_MIN_QUBITS:
        out.basis, out.bp_free = "ratio", not near_haar
    else:
        out.basis, out.bp_free = "undecided", True
    return out


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
