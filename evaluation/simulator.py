"""Exact batched statevector simulator with adjoint-method gradients (the barren-plateau engine).

A circuit is compiled once into a flat program of fixed unitaries and one-parameter rotations
U(a) = exp(-i a/2 G) (G Hermitian), where each rotation angle a is an affine (or, rarely, general)
function of the circuit's Parameters. Library blocks and custom gates are unrolled through their
`definition`; any parameter-free instruction falls back to its qiskit matrix (`Operator`). Global
phases are dropped: they change neither <H> nor its gradient.

Gradients use adjoint differentiation (one forward pass, one backward pass with two states), so the
cost of the full gradient is ~3 forward simulations regardless of the number of parameters. All
samples of a batch are simulated together (states of shape (B, 2**n)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from qiskit.circuit import ParameterExpression, QuantumCircuit
from qiskit.quantum_info import Operator

_I2 = np.eye(2, dtype=complex)
_X = np.array([[0, 1], [1, 0]], dtype=complex)
_Y = np.array([[0, -1j], [1j, 0]], dtype=complex)
_Z = np.diag([1.0, -1.0]).astype(complex)
_P1 = np.diag([0.0, 1.0]).astype(complex)

# Generators in qiskit's little-endian order: for qargs (q0, q1) the matrix index is 2*b(q1) + b(q0),
# so kron(A, B) puts A on q1 and B on q0. Controls are qargs[0].
_GENERATORS: dict[str, np.ndarray] = {
    "rx": _X, "ry": _Y, "rz": _Z,
    "p": -2 * _P1, "u1": -2 * _P1, "phase": -2 * _P1,
    "crx": np.kron(_X, _P1), "cry": np.kron(_Y, _P1), "crz": np.kron(_Z, _P1),
    "cp": np.kron(-2 * _P1, _P1), "cu1": np.kron(-2 * _P1, _P1), "cphase": np.kron(-2 * _P1, _P1),
    "rxx": np.kron(_X, _X), "ryy": np.kron(_Y, _Y), "rzz": np.kron(_Z, _Z),
    "rzx": np.kron(_X, _Z),  # qiskit RZXGate(theta) = exp(-i theta/2 X(q1) Z(q0))
}
_SKIP = {"barrier", "delay", "id", "i"}


class UnsupportedCircuit(ValueError):
    """The circuit cannot be simulated as a pure-state unitary (mid-circuit measurement, reset, ...)."""


class NonFiniteAngle(UnsupportedCircuit):
    """An angle is complex, NaN or infinite (the circuit is invalid, docs/evaluation.md)."""


@dataclass
class Angle:
    """a(theta) = const + sum(coeff * theta[idx]); `expr` set only for non-affine expressions."""
    const: float
    terms: list[tuple[int, float]]
    expr: ParameterExpression | None = None
    expr_params: list = field(default_factory=list)


@dataclass
class Op:
    qubits: tuple[int, ...]
    matrix: np.ndarray | None = None      # fixed unitary
    gen: np.ndarray | None = None         # rotation generator G
    evals: np.ndarray | None = None
    evecs: np.ndarray | None = None
    angle: Angle | None = None
    diagonal: bool = False                # matrix (or generator, hence every U(a)) is diagonal
    permutation: np.ndarray | None = None  # fixed 0/1 permutation matrix: new[i] = old[perm[i]] (local)


@dataclass
class Program:
    num_qubits: int
    num_parameters: int
    ops: list[Op]
    parameters: list  # qiskit Parameters, in circuit.parameters order


def _to_float(value) -> float:
    """A real, finite angle (or coefficient); UnsupportedCircuit for a complex or non-finite one
    (never reduced to its real part)."""
    c = complex(value)
    if c.imag != 0 or not np.isfinite(c.real):
        raise NonFiniteAngle(f"angle {c} is not a finite real number")
    return float(c.real)


def _bind(expr: ParameterExpression, params: list, values) -> float:
    """The expression's value at `values`; NonFiniteAngle when it is not a finite real number there (qiskit
    refuses an overflow with ZeroDivisionError, "attempted to bind infinite value")."""
    try:
        value = expr.bind(dict(zip(params, (float(v) for v in values))), allow_unknown_parameters=True)
    except (ZeroDivisionError, OverflowError, ValueError, TypeError) as exc:
        raise NonFiniteAngle(f"angle expression has no finite real value at the sampled parameters ({exc})") from exc
    return _to_float(value)


def _angle(value, index: dict) -> Angle:
    """The angle as const + sum(coeff * theta) when it is affine in its parameters, else the expression itself.
    Decided numerically (bind is linear in the expression's size; symbolic differentiation of a nested
    expression can take longer than any judge budget): the coefficients from unit steps, affinity checked at
    two off-grid points."""
    if not isinstance(value, ParameterExpression):
        return Angle(const=_to_float(value), terms=[])
    params = list(value.parameters)
    if not params:
        return Angle(const=_to_float(value.numeric() if hasattr(value, "numeric") else value), terms=[])
    k = len(params)
    const = _bind(value, params, np.zeros(k))
    coeffs = [_bind(value, params, np.eye(k)[i]) - const for i in range(k)]
    affine = True
    for point in (np.linspace(0.37, 1.91, k), np.linspace(-2.3, 0.71, k)):
        predicted = const + float(np.dot(coeffs, point))
        if not np.isclose(_bind(value, params, point), predicted, rtol=1e-9, atol=1e-9):
            affine = False
            break
    if affine:
        return Angle(const=const, terms=[(index[p], c) for p, c in zip(params, coeffs)])
    return Angle(const=0.0, terms=[(index[p], 0.0) for p in params], expr=value, expr_params=params)


_FD_STEP = 1e-6  # central differences of a non-affine angle: error of order step**2 times the third derivative


@lru_cache(maxsize=4096)
def _eig(name: str) -> tuple[np.ndarray, np.ndarray]:
    return np.linalg.eigh(_GENERATORS[name])


def _rotation(name: str, qubits: tuple[int, ...], value, index: dict) -> Op:
    evals, evecs = _eig(name)
    return Op(qubits=qubits, gen=_GENERATORS[name], evals=evals, evecs=evecs, angle=_angle(value, index))


def _is_parameterized(op) -> bool:
    return any(isinstance(p, ParameterExpression) and p.parameters for p in getattr(op, "params", []))


def _fixed_matrix(op) -> np.ndarray:
    try:
        return np.asarray(op.to_matrix(), dtype=complex)
    except Exception:
        return Operator(op).data


def _unroll(circuit: QuantumCircuit, qmap: list[int], index: dict, ops: list[Op], touched: set, depth: int = 0) -> None:
    if depth > 50:
        raise UnsupportedCircuit("gate definitions nested more than 50 levels")
    for inst in circuit.data:
        op = inst.operation
        name = op.name
        qubits = tuple(qmap[circuit.find_bit(q).index] for q in inst.qubits)
        if name in _SKIP:
            continue
        if name == "measure":
            raise UnsupportedCircuit("mid-circuit measurement")
        if name == "reset":
            if any(q in touched for q in qubits):
                raise UnsupportedCircuit("reset after gates")
            continue
        if getattr(op, "condition", None) is not None or hasattr(op, "blocks"):
            raise UnsupportedCircuit(f"classically controlled / control-flow instruction {name!r}")
        if not qubits and not getattr(op, "num_clbits", 0):
            continue  # a gate on no qubit (GlobalPhaseGate) is a global phase: no expectation value sees it
        touched.update(qubits)
        if name in _GENERATORS and len(op.params) == 1:
            ops.append(_rotation(name, qubits, op.params[0], index))
        elif name in ("u", "u3") and _is_parameterized(op):
            theta, phi, lam = op.params  # U = e^{i(phi+lam)/2} RZ(phi) RY(theta) RZ(lam)
            (q,) = qubits
            ops += [_rotation("rz", (q,), lam, index), _rotation("ry", (q,), theta, index),
                    _rotation("rz", (q,), phi, index)]
        elif name == "u2" and _is_parameterized(op):
            phi, lam = op.params
            (q,) = qubits
            ops += [_rotation("rz", (q,), lam, index), _rotation("ry", (q,), np.pi / 2, index),
                    _rotation("rz", (q,), phi, index)]
        elif not _is_parameterized(op):
            if getattr(op, "num_clbits", 0):
                raise UnsupportedCircuit(f"instruction {name!r} acts on classical bits")
            if name == "initialize" or name == "state_preparation":
                raise UnsupportedCircuit(f"{name!r} is not a unitary gate")
            ops.append(Op(qubits=qubits, matrix=_fixed_matrix(op)))
        else:
            definition = op.definition
            if definition is None:
                raise UnsupportedCircuit(f"parameterised gate {name!r} has no definition")
            _unroll(definition, list(qubits), index, ops, touched, depth + 1)


def _classify(op: Op) -> None:
    m = op.gen if op.gen is not None else op.matrix
    if np.count_nonzero(m - np.diag(np.diag(m))) == 0:
        op.diagonal = True
    elif op.matrix is not None and np.all((np.abs(m) < 1e-14) | (np.abs(m - 1) < 1e-14)) \
            and np.all(np.abs(m).sum(axis=1) == 1) and np.all(np.abs(m).sum(axis=0) == 1):
        op.permutation = np.argmax(np.abs(m), axis=1)


def compile_circuit(circuit: QuantumCircuit) -> Program:
    """Flatten to rotations + fixed unitaries. Final measurements must be removed beforehand."""
    params = list(circuit.parameters)
    index = {p: i for i, p in enumerate(params)}
    ops: list[Op] = []
    _unroll(circuit, list(range(circuit.num_qubits)), index, ops, set())
    for op in ops:
        _classify(op)
    return Program(num_qubits=circuit.num_qubits, num_parameters=len(params), ops=ops, parameters=params)


@lru_cache(maxsize=1024)
def _local_index(qubits: tuple[int, ...], n: int) -> np.ndarray:
    """For every basis state of n qubits, its index in the gate's local 2**k space (qiskit order)."""
    i = np.arange(1 << n)
    out = np.zeros(1 << n, dtype=np.intp)
    for j, q in enumerate(qubits):
        out |= ((i >> q) & 1) << j
    return out


@lru_cache(maxsize=1024)
def _global_perm(qubits: tuple[int, ...], n: int, local_perm: tuple[int, ...]) -> np.ndarray:
    """new_psi = psi[:, perm] for a fixed local permutation gate."""
    i = np.arange(1 << n)
    loc = _local_index(qubits, n)
    src_loc = np.asarray(local_perm)[loc]
    base = i.copy()
    for q in qubits:
        base &= ~(1 << q)
    src = base.copy()
    for j, q in enumerate(qubits):
        src |= ((src_loc >> j) & 1) << q
    return src


def _apply_op(psi: np.ndarray, op: Op, mat: np.ndarray, n: int, *, generator: bool = False) -> np.ndarray:
    """Fast paths: diagonal -> one multiply; permutation -> one gather; else dense local matmul."""
    if op.diagonal:
        d = np.diagonal(mat, axis1=-2, axis2=-1)  # (d,) or (B, d)
        if len(op.qubits) <= 2:
            return _apply_diagonal(psi, d, op.qubits, n)
        return psi * d[..., _local_index(op.qubits, n)]
    if op.permutation is not None and not generator:
        return np.take(psi, _global_perm(op.qubits, n, tuple(int(x) for x in op.permutation)), axis=1)
    return _apply(psi, mat, op.qubits, n)


def _apply_diagonal(psi: np.ndarray, d: np.ndarray, qubits: tuple[int, ...], n: int) -> np.ndarray:
    """A 1- or 2-qubit diagonal (shared (D,) or per sample (B, D)) by broadcasting over a view of psi
    whose axes are (B, rest, bit of the higher qubit, rest, bit of the lower qubit, rest): no gather
    of a (B, 2**n) factor (~10x faster at 10 qubits)."""
    B = psi.shape[0]
    lead = d.shape[:-1]  # () or (B,)
    if len(qubits) == 1:
        q = qubits[0]
        x = psi.reshape(B, 1 << (n - 1 - q), 2, 1 << q)
        return (x * d.reshape(lead + (1, 2, 1))).reshape(B, -1)
    q0, q1 = qubits  # local index = b(q0) + 2 b(q1)
    hi, lo = max(q0, q1), min(q0, q1)
    x = psi.reshape(B, 1 << (n - 1 - hi), 2, 1 << (hi - lo - 1), 2, 1 << lo)
    dk = d.reshape(lead + (2, 2))  # [b(q1), b(q0)]
    if q0 > q1:
        dk = np.swapaxes(dk, -1, -2)  # [b(hi), b(lo)]
    return (x * dk.reshape(lead + (1, 2, 1, 2, 1))).reshape(B, -1)


# ---------------------------------------------------------------- state updates

def _apply(psi: np.ndarray, mat: np.ndarray, qubits: tuple[int, ...], n: int) -> np.ndarray:
    """psi (B, 2**n); mat (d, d) shared or (B, d, d) per sample. Returns a new array."""
    B = psi.shape[0]
    if len(qubits) == 1:  # one stacked matmul (~10x faster than slice arithmetic at 10 qubits)
        q = qubits[0]
        if q == 0:  # rows of 2 amplitudes: x @ mat^T
            x = psi.reshape(B, -1, 2)
            return np.matmul(x, mat.T if mat.ndim == 2 else np.swapaxes(mat, 1, 2)).reshape(B, -1)
        x = psi.reshape(B, 1 << (n - 1 - q), 2, 1 << q)
        return np.matmul(mat if mat.ndim == 2 else mat[:, None], x).reshape(B, -1)
    k = len(qubits)
    axes = [1 + (n - 1 - q) for q in reversed(qubits)]
    x = psi.reshape((B,) + (2,) * n)
    x = np.moveaxis(x, axes, list(range(n + 1 - k, n + 1)))
    shape = x.shape
    x = x.reshape(B, -1, 1 << k)
    if mat.ndim == 2:
        y = x @ mat.T
    else:
        y = np.matmul(x, np.swapaxes(mat, 1, 2))
    y = np.moveaxis(y.reshape(shape), list(range(n + 1 - k, n + 1)), axes)
    return np.ascontiguousarray(y).reshape(B, -1)


def _angles(op: Op, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Angle values (B,) and d angle / d theta_j as (B, len(terms))."""
    a = op.angle
    B = theta.shape[0]
    if a.expr is None:
        vals = np.full(B, a.const)
        for j, c in a.terms:
            vals = vals + c * theta[:, j]
        coeffs = np.tile(np.array([c for _, c in a.terms], dtype=float), (B, 1))
        return vals, coeffs
    vals = np.empty(B)
    coeffs = np.empty((B, len(a.expr_params)))
    cols = [j for j, _ in a.terms]
    for b in range(B):
        point = theta[b, cols]
        vals[b] = _bind(a.expr, a.expr_params, point)
        for t in range(len(cols)):
            step = np.zeros(len(cols))
            step[t] = _FD_STEP
            coeffs[b, t] = (_bind(a.expr, a.expr_params, point + step)
                            - _bind(a.expr, a.expr_params, point - step)) / (2 * _FD_STEP)
    return vals, coeffs


def _rotation_mats(op: Op, vals: np.ndarray) -> np.ndarray:
    phases = np.exp(-0.5j * vals[:, None] * op.evals[None, :])
    return np.einsum("ij,bj,kj->bik", op.evecs, phases, op.evecs.conj())


def _prepare(prog: Program, theta: np.ndarray):
    mats, coeffs = [], []
    for op in prog.ops:
        if op.matrix is not None:
            mats.append(op.matrix)
            coeffs.append(None)
        else:
            vals, c = _angles(op, theta)
            mats.append(_rotation_mats(op, vals))
            coeffs.append(c)
    return mats, coeffs


def _check_theta(prog: Program, theta) -> np.ndarray:
    theta = np.atleast_2d(np.asarray(theta, dtype=float))
    if theta.shape[1] != prog.num_parameters:
        raise ValueError(f"expected {prog.num_parameters} parameters, got {theta.shape[1]}")
    return theta


def _forward(prog: Program, mats: list, batch: int) -> np.ndarray:
    """|0...0> through every op of the program, for `batch` samples at once: (batch, 2**n)."""
    n = prog.num_qubits
    psi = np.zeros((batch, 1 << n), dtype=complex)
    psi[:, 0] = 1.0
    for op, m in zip(prog.ops, mats):
        psi = _apply_op(psi, op, m, n)
    return psi


def statevector(prog: Program, theta) -> np.ndarray:
    theta = _check_theta(prog, theta)
    mats, _ = _prepare(prog, theta)
    return _forward(prog, mats, theta.shape[0])


def _expect(psi: np.ndarray, hmat) -> tuple[np.ndarray, np.ndarray]:
    lam = np.asarray((hmat @ psi.T).T)
    return np.einsum("bi,bi->b", psi.conj(), lam).real, lam


def energy_and_gradient(prog: Program, hmat, theta) -> tuple[np.ndarray, np.ndarray]:
    """<H>(theta) of shape (B,) and its exact gradient (B, P) by adjoint differentiation."""
    theta = _check_theta(prog, theta)
    n = prog.num_qubits
    B = theta.shape[0]
    mats, coeffs = _prepare(prog, theta)
    psi = _forward(prog, mats, B)
    energies, lam = _expect(psi, hmat)
    grad = np.zeros((B, prog.num_parameters))
    both = np.concatenate([psi, lam])  # rows 0..B-1: psi, B..2B-1: lam; every gate undone on both at once
    for op, m, c in zip(reversed(prog.ops), reversed(mats), reversed(coeffs)):
        if c is not None and op.angle.terms:
            gpsi = _apply_op(both[:B], op, op.gen, n, generator=True)
            d_angle = np.einsum("bi,bi->b", both[B:].conj(), gpsi).imag  # dE/da = Im<lam|G|psi>
            for t, (j, _) in enumerate(op.angle.terms):
                grad[:, j] += c[:, t] * d_angle
        if op.permutation is not None:  # inverse permutation: transpose of a real 0/1 matrix
            inv = _global_perm(op.qubits, n, tuple(int(x) for x in np.argsort(op.permutation)))
            both = np.take(both, inv, axis=1)
            continue
        mdag = m.conj().T if m.ndim == 2 else np.conj(np.swapaxes(m, 1, 2))
        if mdag.ndim == 3:
            mdag = np.concatenate([mdag, mdag])
        both = _apply_op(both, op, mdag, n)
    return energies, grad
