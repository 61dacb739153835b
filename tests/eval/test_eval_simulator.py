"""The exact simulator and its gradients against qiskit (Statevector + parameter shift)."""

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter, ParameterVector
from qiskit.circuit.library import efficient_su2
from qiskit.quantum_info import Statevector

from evaluation import barren, simulator
from evaluation.hamiltonians import build_operator, get_hamiltonian, sparse_matrix

from eval_replies_cases import rycx


def _energy(qc, op, values):
    return Statevector(qc.assign_parameters(values)).expectation_value(op).real


def _param_shift_variances(qc, op, samples):
    """Naive reference: two Statevector simulations per parameter per sample."""
    grads = np.zeros_like(samples)
    for s, x in enumerate(samples):
        for k in range(len(x)):
            e = np.eye(len(x))[k] * np.pi / 2
            grads[s, k] = 0.5 * (_energy(qc, op, x + e) - _energy(qc, op, x - e))
    return grads.var(axis=0), grads


@pytest.mark.parametrize("n,ham", [(4, "heisenberg"), (5, "tfim")])
def test_variances_match_qiskit_parameter_shift(n, ham):
    qc = efficient_su2(n, reps=2)
    op = build_operator(ham, n)
    samples = barren.sample_parameters(qc.num_parameters, 30, seed=7)
    ref_var, _ = _param_shift_variances(qc, op, samples)
    ours = barren.gradient_variances(qc, op.to_matrix(sparse=True), samples)
    assert np.max(np.abs(ours - ref_var)) < 1e-8


def test_shared_and_scaled_parameters_chain_rule():
    a, b = Parameter("a"), Parameter("b")

    def build(angles):  # one angle per gate occurrence
        qc = QuantumCircuit(3)
        qc.ry(angles[0], 0); qc.rx(angles[1], 1); qc.cx(0, 1); qc.rzz(angles[2], 1, 2)
        qc.ry(angles[3], 2); qc.rxx(angles[4], 0, 2); qc.rz(angles[5], 0)
        return qc

    def occurrence_angles(va, vb):  # the expressions used below, and their d/da, d/db
        return [2 * va + 0.3, vb, va, -vb, 0.5 * va - vb, va], [(2, 0), (0, 1), (1, 0), (0, -1), (0.5, -1), (1, 0)]

    qc = build([2 * a + 0.3, b, a, -b, 0.5 * a - b, a])
    op = build_operator("heisenberg", 3)
    samples = barren.sample_parameters(2, 30, seed=3)
    ref = np.zeros((30, 2))
    for s, (va, vb) in enumerate(samples):
        angles, coeffs = occurrence_angles(va, vb)
        for i, (ca, cb) in enumerate(coeffs):
            plus, minus = list(angles), list(angles)
            plus[i] += np.pi / 2
            minus[i] -= np.pi / 2
            d = 0.5 * (Statevector(build(plus)).expectation_value(op).real - Statevector(build(minus)).expectation_value(op).real)
            ref[s] += [ca * d, cb * d]
    prog = simulator.compile_circuit(qc)
    assert [p.name for p in prog.parameters] == ["a", "b"]
    _, grads = simulator.energy_and_gradient(prog, op.to_matrix(sparse=True), samples)
    assert np.max(np.abs(grads - ref)) < 1e-8
    assert np.max(np.abs(grads.var(0) - ref.var(0))) < 1e-8


def test_generic_gates_energy_and_gradient():
    """Controlled rotations, U, phase, custom sub-circuit gates, non-affine expressions, fixed gates."""
    a, b, c = Parameter("a"), Parameter("b"), Parameter("c")
    qc = QuantumCircuit(3)
    qc.h(0); qc.crx(b, 0, 1); qc.cry(a, 1, 2); qc.crz(a * b, 2, 0); qc.cp(b, 0, 2); qc.rzx(a, 1, 0)
    qc.u(a, b, 0.2, 1); qc.p(a, 2); qc.sx(1); qc.r(a, b, 0); qc.swap(0, 1); qc.t(2); qc.ecr(0, 1)
    sub = QuantumCircuit(2)
    sub.rx(c, 0); sub.cz(0, 1); sub.ry(2 * c, 1)
    qc.append(sub.to_gate(), [2, 0])
    op = build_operator("heisenberg", 3)
    hm = op.to_matrix(sparse=True)
    prog = simulator.compile_circuit(qc)
    samples = barren.sample_parameters(3, 5, seed=1)
    energies, grads = simulator.energy_and_gradient(prog, hm, samples)
    for s, x in enumerate(samples):
        assert energies[s] == pytest.approx(_energy(qc, op, x), abs=1e-12)
        h = 1e-5
        fd = [(_energy(qc, op, x + h * e) - _energy(qc, op, x - h * e)) / (2 * h) for e in np.eye(3)]
        assert np.max(np.abs(grads[s] - fd)) < 1e-7
    sv = simulator.statevector(prog, samples[:1])[0]
    assert abs(abs(np.vdot(sv, Statevector(qc.assign_parameters(samples[0])).data)) - 1) < 1e-12


def test_flat_landscape_is_a_plateau():
    n = 4
    t = ParameterVector("t", n)
    qc = QuantumCircuit(n)
    for i in range(n):
        qc.rz(t[i], i)  # phases on |0...0>: <H> does not depend on any parameter
    res = barren.detect_barren_plateau(qc, sparse_matrix("heisenberg", n))
    assert res.bp_variance == pytest.approx(0.0, abs=1e-20)
    assert res.has_barren_plateau and res.dead_parameters == n


@pytest.mark.parametrize("n", [4, 6, 8])
@pytest.mark.parametrize("ham", ["xy_chain", "heisenberg", "tfim"])
def test_shallow_ry_cx_not_flagged(n, ham):
    ns: dict = {}
    exec(rycx(n), ns)
    res = barren.detect_barren_plateau(ns["qc"], sparse_matrix(ham, n))
    assert not res.has_barren_plateau
    assert 0.05 < res.bp_variance < 5


def test_vqe_reaches_ground_state_with_expressive_ansatz():
    qc = efficient_su2(4, reps=3)
    h = get_hamiltonian("tfim", 4)
    res = barren.run_vqe(qc, h.operator, h.ground_energy, starts=2)
    assert -1e-9 < res.energy_error < 5e-2
    ns: dict = {}
    exec(rycx(4), ns)  # real amplitudes, 1 layer: cannot reach the Heisenberg singlet-like ground state
    hh = get_hamiltonian("heisenberg", 4)
    assert barren.run_vqe(ns["qc"], hh.operator, hh.ground_energy, starts=2).energy_error > 0.1


@pytest.mark.parametrize("angle", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_fixed_angle_is_an_error(angle):
    qc = QuantumCircuit(2)
    qc.ry(Parameter("a"), 0)
    qc.ry(angle, 1)
    with pytest.raises(simulator.NonFiniteAngle, match="not a finite real number"):
        simulator.compile_circuit(qc)


def test_complex_coefficient_in_an_expression_is_an_error():
    """Never reduced to its real part (RY((1+1j) a) is not unitary; qiskit accepts the expression)."""
    a = Parameter("a")
    qc = QuantumCircuit(1)
    qc.ry((1 + 1j) * a, 0)
    with pytest.raises(simulator.NonFiniteAngle):
        simulator.compile_circuit(qc)
