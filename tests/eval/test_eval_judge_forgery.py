"""Issue 10, "the judge can be fooled": every forging trick scored through the real sandbox
(score_replies), in ONE batch with valid replies before, between and after them. Expected depths and
gate counts come from plain qiskit on the same circuit built here, never from evaluation.verify."""

import json
import math

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.quantum_info import SparsePauliOp, Statevector

from evaluation.report import write_results
from evaluation.sandbox import SandboxLimits
from evaluation.scoring import score_replies

from eval_replies_cases import fence, record, rycx

# A deep circuit: 1,200 RY angles and 1,200 CX on 4 qubits (plain qiskit depth 2,400).
DEEP = '''from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
t = ParameterVector("t", 1200)
deep = QuantumCircuit(4)
for k in range(1200):
    deep.ry(t[k], k % 4)
    deep.cx(k % 4, (k + 1) % 4)
'''
# A shallow body with H and RZ: "Use only RY and CX gates" must not hold for it.
SHALLOW_H = '''from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
t = ParameterVector("t", 4)
deep = QuantumCircuit(4)
for i in range(4):
    deep.h(i)
    deep.rz(t[i], i)
for i in range(3):
    deep.cx(i, i + 1)
'''


def _renamed(body: str, name: str, instruction: bool = False) -> str:
    """The reply: `body`'s circuit wrapped into one gate that claims a standard name."""
    # an instruction with a classical bit, as a measurement has (placed last: a "final measurement")
    wrap = "QuantumCircuit(4, 1).compose(deep).to_instruction()" if instruction else "deep.to_gate()"
    clbits = ", 1" if instruction else ""
    append = "qc.append(g, range(4), [0])" if instruction else "qc.append(g, range(4))"
    return body + f"g = {wrap}\ng.name = {name!r}\nqc = QuantumCircuit(4{clbits})\n{append}\n"


NESTED = DEEP.replace("range(1200)", "range(8)") + '''for _ in range(25):
    g = deep.to_gate()
    deep = QuantumCircuit(4)
    deep.append(g, range(4))
qc = deep
'''
NAN_ANGLE = '''from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
qc = QuantumCircuit(4)
qc.ry(float("nan"), 0)
qc.ry(Parameter("a"), 1)
for i in range(3):
    qc.cx(i, i + 1)
'''
INF_ANGLE = NAN_ANGLE.replace('float("nan")', 'float("inf")')
GLOBAL_PHASE_ONLY = '''from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
qc = QuantumCircuit(4, global_phase=Parameter("g"))
qc.h(0)
for i in range(3):
    qc.cx(i, i + 1)
'''
OPAQUE = '''from qiskit import QuantumCircuit
from qiskit.circuit import Gate, Parameter
qc = QuantumCircuit(4)
qc.append(Gate("ry", 1, [Parameter("a")]), [0])
'''
CONTROL_FLOW = '''from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
qc = QuantumCircuit(4, 1)
qc.ry(Parameter("a"), 0)
qc.measure(0, 0)
with qc.if_test((qc.clbits[0], 1)):
    qc.x(1)
'''
MID_MEASURE = '''from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
qc = QuantumCircuit(4, 1)
qc.ry(Parameter("a"), 0)
qc.measure(0, 0)
qc.cx(0, 1)
'''
LIBRARY_GATES = '''from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.circuit.library import PauliEvolutionGate, RYGate, StatePreparation, UnitaryGate
from qiskit.quantum_info import SparsePauliOp
import numpy as np
qc = QuantumCircuit(4)
qc.append(StatePreparation([0.6, 0.8]), [2])
qc.append(PauliEvolutionGate(SparsePauliOp("XX"), time=Parameter("t")), [0, 1])
qc.append(RYGate(Parameter("c")).control(1, annotated=True), [1, 2])
qc.append(UnitaryGate(np.array([[0, 1], [1, 0]])), [3])
'''
INITIALIZE = '''from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
qc = QuantumCircuit(4)
qc.initialize([0, 1], 0)
qc.ry(Parameter("a"), 0)
qc.cx(0, 1)
'''
RAISING_BUILDER = '''def build_circuit():
    from qiskit import execute
    return execute
'''

FORGED = {
    "renamed_rx": _renamed(DEEP, "rx"),
    "renamed_ry": _renamed(DEEP, "ry"),
    "renamed_barrier": _renamed(DEEP, "barrier"),
    "renamed_delay": _renamed(DEEP, "delay"),
    "renamed_measure": _renamed(DEEP, "measure", instruction=True),
    "ry_with_h_inside": _renamed(SHALLOW_H, "ry"),
    "nested_25": NESTED,
    "nan_angle": NAN_ANGLE,
    "inf_angle": INF_ANGLE,
    "global_phase_only": GLOBAL_PHASE_ONLY,
    "opaque_ry": OPAQUE,
    "control_flow": CONTROL_FLOW,
}


def _plain(body: str) -> QuantumCircuit:
    """The circuit `body` builds, by plain qiskit in this process (the independent reference)."""
    ns: dict = {}
    exec(body, ns)  # noqa: S102 - the test's own code
    return ns["deep"]


@pytest.fixture(scope="module")
def scored():
    cases = {"valid_first": rycx(4)}
    for i, (k, v) in enumerate(FORGED.items()):
        cases[k] = v
        if i % 4 == 3:
            cases[f"valid_{i}"] = rycx(4)
    cases.update(mid_measure=MID_MEASURE, library_gates=LIBRARY_GATES, initialize=INITIALIZE,
                 raising_builder=RAISING_BUILDER,
                 valid_last=rycx(4))
    records = [record(k, fence(v), constraint="Use only RY and CX gates") for k, v in cases.items()]
    results = score_replies(records, workers=2, limits=SandboxLimits(timeout_s=20))
    return {r["id"]: r for r in results}


def test_valid_replies_around_the_forgeries_still_score(scored):
    valid = [k for k in scored if k.startswith("valid")]
    assert len(valid) == 5
    ns: dict = {}
    exec(rycx(4), ns)  # noqa: S102
    ref = ns["qc"]
    for k in valid:
        r = scored[k]
        assert r["verification_pass"] is True and r["bp_free"] is True and r["failure"] is None, r
        assert r["depth"] == ref.depth() and r["gate_counts"] == dict(sorted(ref.count_ops().items()))
        assert r["constraint_satisfied"] is True and r["judge_error"] is None


@pytest.mark.parametrize("name", ["renamed_rx", "renamed_ry", "renamed_barrier", "renamed_delay", "renamed_measure"])
def test_renamed_deep_gate_is_decomposed_and_too_deep(scored, name):
    r = scored[name]
    plain = _plain(DEEP)
    assert r["verification_pass"] is False and r["failure"] == "too_deep" and r["bp_free"] is None
    assert r["depth"] == plain.depth()  # 2400: the whole body, not 1
    assert r["num_parameters"] == plain.num_parameters == 1200
    assert r["gate_counts"] == {"cx": 1200, "ry": 1200}


def test_gate_named_ry_does_not_pass_the_ry_cx_constraint(scored):
    r = scored["ry_with_h_inside"]
    plain = _plain(SHALLOW_H)
    assert r["verification_pass"] is True  # shallow and parameterised: a legitimate circuit
    assert r["gate_counts"] == dict(sorted(plain.count_ops().items()))  # h, rz, cx: what is inside
    assert r["depth"] == plain.depth()
    assert r["constraint_satisfied"] is False


def test_nesting_deeper_than_the_rounds_is_invalid(scored):
    r = scored["nested_25"]
    assert r["verification_pass"] is False and r["failure"] == "invalid_circuit"
    assert "nested more than" in r["error"] and r["bp_free"] is None


@pytest.mark.parametrize("name", ["nan_angle", "inf_angle"])
def test_non_finite_angle_is_invalid_never_bp_free(scored, name):
    r = scored[name]
    assert r["verification_pass"] is False and r["failure"] == "invalid_circuit" and r["bp_free"] is None
    assert "non-finite" in r["error"] and r["bp_variance"] is None


def test_global_phase_alone_is_not_variational(scored):
    r = scored["global_phase_only"]
    ns: dict = {}
    exec(GLOBAL_PHASE_ONLY, ns)  # noqa: S102
    assert ns["qc"].num_parameters == 1  # qiskit counts the phase's parameter; the judge must not
    assert r["verification_pass"] is False and r["failure"] == "no_parameters" and r["num_parameters"] == 0


@pytest.mark.parametrize("name,needle", [("opaque_ry", "no definition"), ("control_flow", "control-flow")])
def test_non_standard_leftovers_are_invalid(scored, name, needle):
    r = scored[name]
    assert r["verification_pass"] is False and r["failure"] == "invalid_circuit" and needle in r["error"]


def _heisenberg(n: int) -> SparsePauliOp:
    terms = [(p, [i, i + 1], 1.0) for i in range(n - 1) for p in ("XX", "YY", "ZZ")]
    return SparsePauliOp.from_sparse_list(terms, num_qubits=n)


def test_library_gates_are_decomposed_faithfully(scored):
    """StatePreparation, PauliEvolutionGate, an annotated controlled RY and a UnitaryGate: the judge's BP variance equals
    plain qiskit's (Statevector, central finite differences) on the undecomposed circuit."""
    r = scored["library_gates"]
    ns: dict = {}
    exec(LIBRARY_GATES, ns)  # noqa: S102
    qc = ns["qc"]
    assert r["verification_pass"] is True and r["bp_status"] == "checked" and r["judge_error"] is None
    assert r["num_parameters"] == qc.num_parameters == 2
    ham = _heisenberg(4)
    # the judge's sampling rule (issue 18): each parameter over its period, its gradient over its coefficient norm,
    # as many samples as the judge drew at the prompt's size
    from evaluation import barren, simulator
    from evaluation.verify import verify_circuit

    _, flat = verify_circuit(qc, 4, "", 50)
    scales = barren.parameter_scales(simulator.compile_circuit(flat))
    samples = barren.sample_parameters(qc.num_parameters, r["bp_samples"]["4"], 0, periods=scales.periods)

    def energy(x: np.ndarray) -> float:
        return float(np.real(Statevector(qc.assign_parameters(x)).expectation_value(ham)))

    h = 1e-5
    grads = np.array([[(energy(x + h * e) - energy(x - h * e)) / (2 * h) for e in np.eye(len(x))] for x in samples])
    grads /= scales.norms[None, :]
    assert r["bp_variance"] == pytest.approx(grads.var(axis=0).mean(), rel=1e-5, abs=1e-9)


def test_initialize_is_decomposed_into_a_genuine_reset(scored):
    r = scored["initialize"]
    assert r["verification_pass"] is True and r["bp_status"] == "checked" and r["judge_error"] is None
    assert r["gate_counts"].get("reset") == 1 and r["num_parameters"] == 1


def test_mid_circuit_measurement_is_its_own_bp_status(scored):
    r = scored["mid_measure"]
    assert r["verification_pass"] is True and r["bp_free"] is None
    assert r["bp_status"] == "unsupported" and "mid-circuit measurement" in r["error"]
    assert r["judge_error"] is None  # the reply's structure, not a broken judge


def test_exception_in_the_replys_function_is_reported(scored):
    r = scored["raising_builder"]
    assert r["verification_pass"] is False
    assert "build_circuit() raised ImportError" in r["error"] and "execute" in r["error"]
    assert r["failure"] != "no_circuit"


def test_results_jsonl_is_strict_json(scored, tmp_path):
    def no_constants(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    results = list(scored.values()) + [{"id": "nan", "bp_variance": float("nan"), "x": [float("inf")],
                                        "y": {"z": -float("inf")}}]
    path = write_results(tmp_path, results)
    rows = [json.loads(line, parse_constant=no_constants) for line in path.read_text().splitlines()]
    assert len(rows) == len(results)
    assert rows[-1] == {"id": "nan", "bp_variance": None, "x": [None], "y": {"z": None}}
    assert all(not isinstance(v, float) or math.isfinite(v) for r in rows for v in r.values())
