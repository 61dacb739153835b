"""The barren-plateau verdict (issue 13): the 2-design reference, the rebuild at larger sizes, the rule.

Physics labels, from the literature rather than from the code under test: shallow hardware-efficient
circuits and Hamiltonian-variational layers with shared angles have no barren plateau at these sizes
(Cerezo et al. 2021, Wiersema et al. 2020); deep unstructured circuits approach a unitary 2-design and
do (McClean et al. 2018); a landscape whose gradients vanish identically is flat.
"""

import ast
import inspect
import math

import numpy as np
import pytest
import yaml
from qiskit.circuit.library import efficient_su2
from qiskit.quantum_info import SparsePauliOp, random_unitary
from scipy.stats import linregress

from bp_heldout_families import controlled_shallow, excitation_preserving_neel, hva_unshared, qaoa_tfim
from eval_replies_cases import fence, literal_layers, record, rycx
from evaluation import simulator
from evaluation.barren import bp_verdict, haar_gradient_variance, pauli_weight, sample_parameters, \
    two_design_gradient_variance
from evaluation.bp_scaling import driving_literals, scaled_sizes
from evaluation.defaults import BP_SCALING_TIME_S, MAX_DEPTH
from evaluation.hamiltonians import build_operator, sparse_matrix
from evaluation.sandbox import SandboxLimits
from evaluation.scoring import score_replies
from evaluation.verify import circuit_depth, flatten

HAMS = ("xy_chain", "heisenberg", "tfim")


# ------------------------------------------------------------------------------ the reference

def test_reference_one_qubit_by_hand():
    """n = 1, H = Z, R = RY: dE/dtheta = n_x r_z - n_z r_x for independent uniform unit vectors n, r
    (Bloch vectors of U+^ Z U+ and of the state), so Var = 2 E[n_x^2] E[r_z^2] = 2/9."""
    assert two_design_gradient_variance(1.0, 1) == pytest.approx(2 / 9, rel=1e-12)
    assert pauli_weight(SparsePauliOp(["ZZI", "IXX", "III"], [2.0, -1.0, 5.0])) == pytest.approx(5.0)


@pytest.mark.parametrize("key,n", [("heisenberg", 2), ("tfim", 3), ("xy_chain", 3)])
def test_reference_matches_haar_unitaries(key, n):
    """Monte Carlo with genuinely Haar-random U- and U+ (qiskit random_unitary), RY on qubit 0:
    dE = (i/2) <psi|[G, U+^ H U+]|psi>.  S = 3000 draws; the standard error of the mean of dE^2 is
    std/sqrt(S); tolerance 4 standard errors."""
    d = 2 ** n
    h = build_operator(key, n).to_matrix()
    g = SparsePauliOp.from_sparse_list([("Y", [0], 1.0)], n).to_matrix()
    rng = np.random.default_rng(7)
    draws = []
    for _ in range(3000):
        up = random_unitary(d, seed=rng).data
        psi = random_unitary(d, seed=rng).data[:, 0]
        ht = up.conj().T @ h @ up
        draws.append(float(np.real(0.5j * (psi.conj() @ (g @ ht - ht @ g) @ psi))) ** 2)
    draws = np.asarray(draws)
    se = draws.std(ddof=1) / math.sqrt(len(draws))
    ref = haar_gradient_variance(key, n)
    assert abs(draws.mean() - ref) <= 4 * se, (draws.mean(), ref, se)
    assert 4 * se < 0.15 * ref  # the check can tell the exact d-factors from the large-d 1/(2d) form at n<=3


@pytest.mark.parametrize("key,n", [("heisenberg", 2), ("tfim", 3), ("xy_chain", 4), ("heisenberg", 5)])
def test_reference_matches_deep_random_circuits_on_our_simulator(key, n):
    """efficient_su2(n, reps=14, linear) with uniform angles approximates a 2-design on both sides of
    the parameters in its middle third. Estimator: mean over S = 240 samples and those parameters of
    (dE/dtheta_k)^2 (the mean of dE/dtheta_k is exactly 0: E is 2*pi-periodic in theta_k). Its
    standard error: std over samples of the per-sample mean, / sqrt(S). Tolerance: 4 standard errors."""
    qc = efficient_su2(n, reps=14, entanglement="linear")
    prog = simulator.compile_circuit(qc)
    samples = sample_parameters(prog.num_parameters, 240, seed=3)
    _, grads = simulator.energy_and_gradient(prog, sparse_matrix(key, n), samples)
    p = prog.num_parameters
    middle = grads[:, p // 3: 2 * p // 3] ** 2
    per_sample = middle.mean(axis=1)
    est, se = per_sample.mean(), per_sample.std(ddof=1) / math.sqrt(len(per_sample))
    ref = haar_gradient_variance(key, n)
    assert abs(est - ref) <= 4 * se, (est, ref, se)


def test_decay_reference_is_the_log_linear_fit_of_the_reference():
    v = bp_verdict("heisenberg", 6, 0.3, {8: 0.29, 10: 0.28})
    sizes = [6, 8, 10]
    d = [2.0 ** m for m in sizes]
    w = [3.0 * (m - 1) for m in sizes]  # Heisenberg chain: 3 unit terms per bond
    ref = [dd * dd * ww / (2 * (dd + 1) * (dd * dd - 1)) for dd, ww in zip(d, w)]
    assert v.decay_reference == pytest.approx(-linregress(sizes, np.log(ref)).slope, rel=1e-9)
    assert v.decay == pytest.approx(-linregress(sizes, np.log([0.3, 0.29, 0.28])).slope, rel=1e-9)
    assert v.basis == "scaling" and v.bp_free is True


def test_rule_branches():
    ref8 = haar_gradient_variance("tfim", 8)
    assert bp_verdict("tfim", 8, 0.0, rule="scaling").basis == "flat"
    assert bp_verdict("tfim", 8, 1.5 * ref8).bp_free is False          # within 2x of Haar at 8: plateau
    assert bp_verdict("tfim", 8, 5 * ref8).bp_free is True
    assert bp_verdict("tfim", 8, 5 * ref8).basis == "ratio"
    four = bp_verdict("tfim", 4, haar_gradient_variance("tfim", 4))
    assert four.basis == "undecided" and four.bp_free is None and four.ratio == pytest.approx(1.0)
    assert "below 8" in four.reason
    old = bp_verdict("tfim", 4, 5e-4, rule="absolute", threshold=1e-3)
    assert old.basis == "absolute" and old.bp_free is False
    with pytest.raises(ValueError):
        bp_verdict("tfim", 4, 0.1, rule="nonsense")


# ------------------------------------------------------------------------------ the AST rewrite

def _lits(code: str, n: int, found_by: str):
    found = driving_literals(ast.parse(code), n, found_by)
    return None if found is None else ([c.lineno for c in found[0]], found[1])


def test_scaled_sizes():
    assert scaled_sizes(2) == [4, 6, 8] and scaled_sizes(4) == [6, 8] and scaled_sizes(6) == [8]
    assert scaled_sizes(7) == [8, 9] and scaled_sizes(8) == [10] and scaled_sizes(9) == []
    assert scaled_sizes(16) == []


def test_driving_literals():
    assert _lits("n = 4\nreps = 4\nqc = f(n, reps)\n", 4, "variable qc") == ([1], "variable n")
    assert _lits("num_qubits: int = 6\n", 6, "variable qc") == ([1], "variable num_qubits")
    assert _lits("if True:\n    N = 6\n", 6, "variable qc") == ([2], "variable N")
    assert _lits("def f():\n    n = 4\n    return n\n", 4, "call f()") is None  # inside a function body
    assert _lits("qc = efficient_su2(4, reps=4)\n", 4, "variable qc") == ([1], "argument of efficient_su2()")
    assert _lits("qc = build(num_qubits=4)\n", 4, "variable qc") == ([1], "argument of build()")
    assert _lits("qc = QuantumCircuit(4)\n", 4, "variable qc") is None  # gates come from later lines
    assert _lits("n = 5\nqc = f(n)\n", 4, "variable qc") is None
    assert _lits("n = True\n", 1, "variable qc") is None


# ------------------------------------------------------------------------------ replies, real sandbox

HEA_FN = '''from qiskit.circuit.library import efficient_su2

def build_ansatz(num_qubits):
    return efficient_su2(num_qubits, reps={reps}, entanglement="linear")
'''

SU2_VAR = '''from qiskit.circuit.library import efficient_su2
num_qubits = {n}
ansatz = efficient_su2(num_qubits, reps={reps}, entanglement="linear")
'''

HVA = '''from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector

def hva(n):
    """Hamiltonian-variational layers, one shared angle per layer and term group."""
    theta = ParameterVector("t", 4)
    qc = QuantumCircuit(n)
    if "{key}" == "tfim":
        qc.h(range(n))
        for layer in range(2):
            for q in range(n - 1):
                qc.rzz(theta[2 * layer], q, q + 1)
            for q in range(n):
                qc.rx(theta[2 * layer + 1], q)
        return qc
    for q in range(0, n - 1, 2):  # singlets on the even bonds
        qc.h(q); qc.cx(q, q + 1); qc.x(q + 1); qc.z(q)
    for layer in range(2):
        for j, start in enumerate((1, 0)):
            for q in range(start, n - 1, 2):
                qc.rxx(theta[2 * layer + j], q, q + 1)
                qc.ryy(theta[2 * layer + j], q, q + 1)
                qc.rzz(theta[2 * layer + j], q, q + 1)
    return qc
{tail}'''


def hva_fn(key):
    return HVA.format(key=key, tail="")


def hva_var(key, n):
    return HVA.format(key=key, tail=f"\nnum_qubits = {n}\nqc = hva(num_qubits)\n")


def literal_hva_tfim(n):
    return (f"from qiskit import QuantumCircuit\nfrom qiskit.circuit import Parameter\n"
            f"g, b = Parameter('g'), Parameter('b')\nqc = QuantumCircuit({n})\nqc.h(range({n}))\n"
            f"for q in range({n - 1}):\n    qc.rzz(g, q, q + 1)\nfor q in range({n}):\n    qc.rx(b, q)\n")


FLAT = '''from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
n = {n}
qc = QuantumCircuit(n)
for q in range(n):
    qc.rz(Parameter(f"p{{q}}"), q)   # phases on |0...0>: the energy never moves
'''

SLOW_REBUILD = '''import time
from qiskit.circuit.library import efficient_su2
n = 4
if n != 4:
    time.sleep(60)
qc = efficient_su2(n, reps=1, entanglement="linear")
'''

CASES: dict[str, tuple[str, int, str, bool, str]] = {}  # id -> (reply, n, hamiltonian, bp_free, basis)
for _n in (4, 6, 8):
    CASES[f"hea_fn_{_n}"] = (fence(HEA_FN.format(reps=1)), _n, "heisenberg", True, "scaling")
    CASES[f"rycx_var_{_n}"] = (fence(rycx(_n)), _n, "xy_chain", True, "scaling")
    CASES[f"hva_heis_fn_{_n}"] = (fence(hva_fn("heisenberg")), _n, "heisenberg", True, "scaling")
    CASES[f"hva_tfim_var_{_n}"] = (fence(hva_var("tfim", _n)), _n, "tfim", True, "scaling")
    CASES[f"deep_fn_{_n}"] = (fence(HEA_FN.format(reps=9)), _n, "heisenberg", False, "scaling")
    CASES[f"deep_var_{_n}"] = (fence(SU2_VAR.format(n=_n, reps=9)), _n, "tfim", False, "scaling")
CASES["hea_literal_8"] = (fence(literal_layers(8, 1)), 8, "heisenberg", True, "ratio")
CASES["hva_literal_8"] = (fence(literal_hva_tfim(8)), 8, "tfim", True, "ratio")
CASES["deep_literal_8"] = (fence(literal_layers(8, 9)), 8, "heisenberg", False, "ratio")
CASES["deep_literal_8_xy"] = (fence(literal_layers(8, 9)), 8, "xy_chain", False, "ratio")
CASES["flat_var_6"] = (fence(FLAT.format(n=6)), 6, "tfim", False, "flat")
# Held-out families through the sandbox (tests/eval/bp_heldout_families.py; the rest via the library in
# test_eval_bp_invariance.py), and literal 8-qubit circuits with every angle written 4*t or t/3.
for _fn, _n, _key, _free in ((hva_unshared, 4, "heisenberg", True), (qaoa_tfim, 6, "tfim", True),
                             (controlled_shallow, 4, "heisenberg", True),
                             (excitation_preserving_neel, 6, "heisenberg", True)):
    CASES[f"{_fn.__name__}_{_n}"] = (fence(inspect.getsource(_fn)), _n, _key, _free, "scaling")
CASES["deep_literal_8_x4"] = (fence(literal_layers(8, 9).replace("(theta[k]", "(4 * theta[k]")
                                    .replace("(theta[k + 1]", "(4 * theta[k + 1]")), 8, "heisenberg", False, "ratio")
CASES["hea_literal_8_third"] = (fence(literal_layers(8, 1).replace("(theta[k]", "(theta[k] / 3")
                                      .replace("(theta[k + 1]", "(theta[k + 1] / 3")), 8, "heisenberg", True, "ratio")
CASES["deep_literal_4"] = (fence(literal_layers(4, 9)), 4, "heisenberg", None, "undecided")
CASES["slow_rebuild_4"] = (fence(SLOW_REBUILD), 4, "heisenberg", None, "undecided")


@pytest.fixture(scope="module")
def scored():
    recs = [record(k, reply, n=n, ham=h) for k, (reply, n, h, _, _) in CASES.items()]
    return {r["id"]: r for r in score_replies(recs, workers=2, limits=SandboxLimits(timeout_s=20.0))}


def test_deep_cases_have_verifiable_depth():
    for n in (4, 6, 8, 10):
        assert circuit_depth(flatten(efficient_su2(n, reps=9, entanglement="linear"))) <= MAX_DEPTH


@pytest.mark.parametrize("case", sorted(CASES))
def test_physics_labels(scored, case):
    _, n, _, free, basis = CASES[case]
    r = scored[case]
    assert r["verification_pass"] is True, r["error"]
    assert r["bp_rule"] == "scaling"
    assert (r["bp_free"], r["bp_basis"]) == (free, basis), (r["bp_scaling"], r["bp_decay"], r["bp_decay_reference"],
                                                            r.get("bp_scaling_note"))
    assert math.isfinite(r["bp_ratio"]) and r["bp_ratio"] == pytest.approx(r["bp_variance"] / r["bp_reference"])
    assert r["bp_scaling"][0]["num_qubits"] == n
    if basis == "scaling":
        assert [p["num_qubits"] for p in r["bp_scaling"]] == {4: [4, 6, 8], 6: [6, 8], 8: [8, 10]}[n]
        assert r["bp_decay"] is not None and r["bp_decay_reference"] > 0
        assert r["bp_rebuild"] == "complete" and r["bp_decay_ci95"][0] <= r["bp_decay"] <= r["bp_decay_ci95"][1]


def test_rebuild_is_time_boxed(scored):
    r = scored["slow_rebuild_4"]
    assert "ran past" in r["bp_scaling_note"]
    assert r["exec_seconds"] < BP_SCALING_TIME_S + 10  # the 60 s sleep was cut; no reply timeout


def test_rebuild_never_pushes_a_reply_past_its_timeout():
    """A reply that needs 1.5 s of its 4 s: its rebuild gets only what is left (less a 1 s margin)."""
    slow = SLOW_REBUILD.replace("n = 4\n", "n = 4\ntime.sleep(1.5)\n")
    (r,) = score_replies([record("slow", fence(slow), n=4)], workers=1, limits=SandboxLimits(timeout_s=4.0))
    assert r["verification_pass"] is True and r.get("failure") is None, r["error"]
    assert r["bp_basis"] == "undecided" and r["exec_seconds"] < 4.0
    assert "ran past" in r["bp_scaling_note"] or "not rebuilt" in r["bp_scaling_note"]


def test_absolute_rule_and_validation_log(tmp_path):
    """--bp-rule absolute is the seed's rule, and validation_log.yaml records the rule."""
    import json
    import subprocess
    import sys

    recs = [record("flat", fence(FLAT.format(n=4)), n=4), record("ok", fence(rycx(4)), n=4)]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    p = subprocess.run([sys.executable, "-m", "evaluation", "score", str(path), "--out", str(tmp_path / "o"),
                        "--no-progress", "--bp-rule", "absolute", "--min-bp-free", "0"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    log = yaml.safe_load((tmp_path / "o" / "validation_log.yaml").read_text())
    assert log["bp_rule"] == "absolute" and log["bp_basis_counts"] == {"absolute": 2}
    rows = {json.loads(x)["id"]: json.loads(x) for x in (tmp_path / "o" / "results.jsonl").read_text().splitlines()}
    assert rows["flat"]["bp_free"] is False and rows["ok"]["bp_free"] is True
    assert rows["ok"]["bp_scaling"] == [{"num_qubits": 4, "variance": rows["ok"]["bp_variance"],
                                         "ratio": rows["ok"]["bp_ratio"]}]
