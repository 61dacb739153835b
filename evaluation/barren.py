"""Barren-plateau check and the optional short VQE, on the exact simulator (evaluation.simulator).

Measurement (docs/evaluation.md): draw `num_samples` (30) parameter vectors, each parameter uniformly
over one period of the landscape along it (`parameter_scales`: 2*pi for a parameter written as the angle
of Pauli rotations, 2*pi/a for `ry(a*t)`), compute the exact gradient of <H> for every parameter at each
sample, divide it by the norm of the parameter's chain-rule coefficients (the directional derivative
along the gate angles it moves), take the variance over samples for each parameter, and average over
parameters -> `bp_variance`. Both steps make it invariant under t -> a*t + b of any parameter.

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
from evaluation.defaults import (BP_BOOTSTRAP, BP_CONFIDENCE, BP_DECAY_FRACTION, BP_FIT_MIN_QUBITS, BP_FLAT_RATIO,
                                 BP_NUM_SAMPLES, BP_RATIO_CUTOFF, BP_RATIO_MIN_QUBITS, BP_RULES,
                                 BP_VARIANCE_THRESHOLD)


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
    gradients: np.ndarray | None = field(default=None, repr=False)  # (samples, parameters), normalised


def sample_parameters(num_parameters: int, num_samples: int = BP_NUM_SAMPLES, seed: int | None = 0,
                      periods: np.ndarray | None = None) -> np.ndarray:
    """Uniform over [0, 2*pi) per parameter, or over [0, periods[k]) (the same uniform draws, scaled)."""
    u = np.random.default_rng(seed).uniform(0.0, 1.0, size=(num_samples, num_parameters))
    return u * (2 * np.pi if periods is None else np.asarray(periods, float)[None, :])


_MAX_DENOMINATOR = 64  # frequency ratios read as fractions p/q with q <= 64 (else: not commensurate)


def _fundamental(freqs: list[float]) -> float:
    """The largest F with every frequency an integer multiple of F (the gcd, through fractions of the
    smallest one); the smallest frequency when they are not commensurate."""
    from fractions import Fraction

    lo = min(freqs)
    ratios = [Fraction(f / lo).limit_denominator(_MAX_DENOMINATOR) for f in freqs]
    if any(abs(float(r) - f / lo) > 1e-9 * max(1.0, f / lo) for r, f in zip(ratios, freqs)):
        return lo
    num = math.gcd(*(r.numerator for r in ratios))
    den = math.lcm(*(r.denominator for r in ratios))
    return lo * num / den


@dataclass
class ParameterScales:
    """Per parameter: `periods` (the period of E along it, sampled over) and `norms` (the norm of its
    chain-rule coefficients, each times its gate's frequency half-width; the gradient is divided by it)."""
    periods: np.ndarray
    norms: np.ndarray


def parameter_scales(prog: simulator.Program) -> ParameterScales:
    """For each free parameter t_k, from the gates it drives (angle a_g = c_g t_k + ..., U = exp(-i a G/2)):
    E along t_k is a trigonometric polynomial whose frequencies are c_g (l_i - l_j)/2 over the eigenvalue
    differences of each G_g (1 for Pauli rotations, 1/2 and 1 for controlled ones), so its period is 2*pi
    over their gcd; the norm is sqrt(sum_g (c_g w_g)^2), w_g = (max l - min l)/2 (1 for every rotation
    the simulator knows). Under t_k -> a t_k + b the period scales by 1/|a| and the norm by |a|, so the
    sampled gate angles and the normalised gradients are the same. A parameter inside a non-affine
    expression (`a*b`, `sin(t)`) keeps [0, 2*pi) and norm 1."""
    freqs: list[list[float]] = [[] for _ in range(prog.num_parameters)]
    squares = np.zeros(prog.num_parameters)
    general = np.zeros(prog.num_parameters, dtype=bool)
    for op in prog.ops:
        if op.angle is None:
            continue
        if op.angle.expr is not None:
            general[[j for j, _ in op.angle.terms]] = True
            continue
        ev = np.unique(np.round(op.evals, 12))
        gaps = {round(abs(a - b) / 2, 12) for a in ev for b in ev if abs(a - b) > 1e-12}
        width = (ev.max() - ev.min()) / 2
        for j, c in op.angle.terms:
            if c != 0.0:
                freqs[j].extend(abs(c) * g for g in gaps)
                squares[j] += (c * width) ** 2
    periods = np.full(prog.num_parameters, 2 * np.pi)
    norms = np.ones(prog.num_parameters)
    for k in range(prog.num_parameters):
        if general[k] or not freqs[k] or squares[k] <= 0:
            continue
        periods[k] = 2 * np.pi / _fundamental(freqs[k])
        norms[k] = math.sqrt(squares[k])
    return ParameterScales(periods=periods, norms=norms)


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
    (sparse) matrix or a SparsePauliOp. Samples over each parameter's period (`parameter_scales`)
    unless `samples` are given; gradients divided by the parameter's coefficient norm either way."""
    hmat = _as_matrix(hmat)
    prog = _program(circuit)
    if prog.num_parameters == 0:
        raise ValueError("circuit has no free parameters")
    scales = parameter_scales(prog)
    if samples is None:
        samples = sample_parameters(prog.num_parameters, num_samples, seed, periods=scales.periods)
    _, grads = simulator.energy_and_gradient(prog, hmat, samples)
    return _bp_result(grads / scales.norms[None, :], threshold)


def _bp_result(grads: np.ndarray, threshold: float) -> BPResult:
    var = grads.var(axis=0)
    mean_var = float(var.mean())
    return BPResult(has_barren_plateau=bool(mean_var < threshold), bp_variance=mean_var,
                    max_variance=float(var.max()), dead_parameters=int((var < 1e-12).sum()),
                    num_parameters=grads.shape[1], num_samples=int(grads.shape[0]),
                    threshold=threshold, variances=[float(v) for v in var], gradients=grads)


def extend_samples(prog: simulator.Program, hmat, result: BPResult, total: int, seed: int | None = 0) -> BPResult:
    """`result` (from detect_barren_plateau with the same prog, hmat and seed) measured on `total`
    samples: the first rows of a larger draw are the smaller draw, so only the new rows are simulated."""
    hmat = _as_matrix(hmat)
    done = result.num_samples
    if total <= done:
        return result
    scales = parameter_scales(prog)
    samples = sample_parameters(prog.num_parameters, total, seed, periods=scales.periods)[done:]
    _, grads = simulator.energy_and_gradient(prog, hmat, samples)
    return _bp_result(np.concatenate([result.gradients, grads / scales.norms[None, :]]), result.threshold)


def bootstrap_variances(gradients: np.ndarray, rng: np.random.Generator, num_boot: int = BP_BOOTSTRAP) -> np.ndarray:
    """`bp_variance` recomputed on `num_boot` resamples (with replacement) of the samples (rows), as
    multinomial counts: mean over parameters of E_w[g^2] - E_w[g]^2 (no (num_boot, samples, parameters) copy)."""
    s = gradients.shape[0]
    w = rng.multinomial(s, np.full(s, 1.0 / s), size=num_boot) / s  # (num_boot, samples)
    second = w @ (gradients ** 2).mean(axis=1)
    first = w @ gradients
    return np.maximum(second - (first ** 2).mean(axis=1), 0.0)


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
    """How `bp_free` was decided. basis: "flat", "scaling", "ratio", "undecided" (rule scaling; then
    bp_free is None and `reason` says why) or "absolute" (rule absolute)."""
    bp_free: bool | None
    rule: str
    basis: str
    ratio: float                       # variance / 2-design variance at the prompt's size
    reference: float                   # the 2-design variance at the prompt's size
    scaling: list[dict] = field(default_factory=list)  # [{num_qubits, variance, ratio}], prompt's size first
    decay: float | None = None         # fitted b in variance ~ exp(-b n), per qubit (natural log)
    decay_reference: float | None = None  # the same fit of the 2-design reference over the same sizes
    ratio_interval: list[float] | None = None  # central BP_CONFIDENCE bootstrap interval of `ratio`
    decay_interval: list[float] | None = None  # ... and of `decay`
    plateau_fraction: float | None = None      # bootstrap resamples whose verdict is "plateau"
    reason: str | None = None          # why undecided


def _decay(sizes: list[int], values: list[float]) -> float:
    """Least-squares slope of ln(value) against n, sign flipped (numpy.polyfit, degree 1)."""
    return float(-np.polyfit(np.asarray(sizes, float), np.log(np.asarray(values, float)), 1)[0])


def _decays(sizes: list[int], values: np.ndarray) -> np.ndarray:
    """_decay of every row of `values` (resamples x sizes) at once."""
    x = np.asarray(sizes, float) - np.mean(sizes)
    y = np.log(np.maximum(values, 1e-300))
    return -(y - y.mean(axis=1, keepdims=True)) @ x / float(x @ x)


def _interval(values: np.ndarray, confidence: float) -> list[float]:
    lo, hi = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return [float(lo), float(hi)]


def bp_verdict(key: str, num_qubits: int, variance: float, scaled: dict[int, float] | None = None, *,
               rule: str = "scaling", threshold: float = BP_VARIANCE_THRESHOLD,
               replicates: dict[int, np.ndarray] | None = None, confidence: float = BP_CONFIDENCE) -> BPVerdict:
    """`variance`: bp_variance at the prompt's size; `scaled`: {larger size: bp_variance} of the same
    ansatz rebuilt larger (empty when the reply does not allow it); `replicates`: {size: bp_variance of
    each bootstrap resample} (`bootstrap_variances`, the same number at every size; a size without
    them counts as exact). Rule `scaling`, in order:
    1. flat: at some measured size variance < BP_FLAT_RATIO x reference -> plateau;
    2. with scaled sizes (two or more sizes >= BP_FIT_MIN_QUBITS): plateau iff the fitted decay over
       those sizes >= BP_DECAY_FRACTION x the reference's decay over the same sizes, or the ratio <=
       BP_RATIO_CUTOFF at a measured size >= BP_RATIO_MIN_QUBITS;
    3. without: plateau iff n >= BP_RATIO_MIN_QUBITS and ratio <= BP_RATIO_CUTOFF;
    4. otherwise undecided: no plateau can be told from a single size below 8 qubits (there even a
       Haar-random circuit's variance is within ~1.3-2.5x of a one-layer ansatz's).
    In 2 and 3 the same test runs on every bootstrap resample: unless at least `confidence` of the
    central mass agrees (plateau fraction >= 1 - (1-confidence)/2, or <= (1-confidence)/2) the
    interval straddles the cut and the verdict is undecided too (bp_free None, basis "undecided")."""
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
    reps = replicates or {}
    nboot = max((len(v) for v in reps.values()), default=1)
    refs = {p["num_qubits"]: haar_gradient_variance(key, p["num_qubits"]) for p in table}
    boot = {p["num_qubits"]: (np.asarray(reps[p["num_qubits"]], float) if p["num_qubits"] in reps
                              else np.full(nboot, p["variance"])) for p in table}
    out.ratio_interval = _interval(boot[num_qubits] / ref, confidence) if reps else None
    big = [p["num_qubits"] for p in table if p["num_qubits"] >= BP_RATIO_MIN_QUBITS]
    near_haar = any(p["ratio"] <= BP_RATIO_CUTOFF for p in table if p["num_qubits"] in big)
    near_boot = np.zeros(nboot, dtype=bool)
    for m in big:
        near_boot |= boot[m] / refs[m] <= BP_RATIO_CUTOFF
    fit = [p["num_qubits"] for p in table if p["num_qubits"] >= BP_FIT_MIN_QUBITS]
    if len(table) >= 2 and len(fit) >= 2:
        out.decay = _decay(fit, [p["variance"] for p in table if p["num_qubits"] in fit])
        out.decay_reference = _decay(fit, [refs[m] for m in fit])
        cut = BP_DECAY_FRACTION * out.decay_reference
        decays = _decays(fit, np.stack([boot[m] for m in fit], axis=1))
        out.decay_interval = _interval(decays, confidence) if reps else None
        out.basis, point, plateau = "scaling", out.decay >= cut or near_haar, (decays >= cut) | near_boot
        what = (f"decay {out.decay:.3f} (interval {_fmt(out.decay_interval)}) against the cut {cut:.3f}"
                + (f", ratio at {', '.join(map(str, big))} qubits against {BP_RATIO_CUTOFF:g}" if big else ""))
    elif num_qubits >= BP_RATIO_MIN_QUBITS:
        out.basis, point, plateau = "ratio", near_haar, near_boot
        what = f"ratio {out.ratio:.3f} (interval {_fmt(out.ratio_interval)}) against the cut {BP_RATIO_CUTOFF:g}"
    else:
        out.basis, out.bp_free = "undecided", None
        out.reason = (f"one size ({num_qubits} qubits) below {BP_RATIO_MIN_QUBITS} and no larger size: "
                      "a single size this small cannot tell a plateau")
        return out
    out.plateau_fraction = float(plateau.mean()) if reps else float(point)
    tail = (1 - confidence) / 2
    if not reps:
        out.bp_free = not point
    elif out.plateau_fraction >= 1 - tail:
        out.bp_free = False
    elif out.plateau_fraction <= tail:
        out.bp_free = True
    else:
        out.bp_free, out.basis = None, "undecided"
        out.reason = (f"{what}: {100 * out.plateau_fraction:.0f} % of {nboot} bootstrap resamples say plateau, "
                      f"the {100 * confidence:g} % interval straddles the cut")
    return out


def _fmt(interval: list[float] | None) -> str:
    return "n/a" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


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
