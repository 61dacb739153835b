"""The split HumanEval judge (issue 17, hole 2): the completion runs in G, the test and the verdict in T.

G is a real separate interpreter (evaluation.humaneval.splitrun, `spawn`: `python -c` execing prompt + completion,
then wire.serve_calls over its stdin/stdout); T is judge_calls in this process. Each hostile completion that
attacks the old design (prompt + completion + test + check in one interpreter) passed it when this test was written
(checked with evaluation.humaneval.outside.run_fresh on build_program's assembly: settrace swap, patched equiv,
__eq__ always True, the QuantumCircuit, dict and Statevector subclasses); the others attack the wire itself. All
must fail here; valid completions run before and after them. Expected outcomes are written before running (the
third field).
"""

import json
import textwrap
from dataclasses import replace

import numpy as np
import pytest

from evaluation.humaneval.assemble import split_program
from evaluation.humaneval.splitrun import run_split
from evaluation.humaneval.tasks import tasks_by_id
from evaluation.humaneval.codec import MAX_DEPTH, Unsupported, WireError, decode, dumps, encode, loads
from evaluation.humaneval.wire import judge_calls

NORMAL, HARD = tasks_by_id("normal"), tasks_by_id("hard")
T0, T1, T2, T5 = (f"qiskitHumanEval/{n}" for n in (0, 1, 2, 5))
T50, T73, T76, T80 = "qiskitHumanEval/50", "qiskitHumanEval/73", "qiskitHumanEval/76", "qiskitHumanEval/80"


def _split(task_id: str, completion: str, variant: str = "normal", timeout_s: float = 60.0) -> dict:
    task = (NORMAL if variant == "normal" else HARD)[task_id]
    prog = split_program(completion, task, variant)
    return run_split(prog, task.entry_point, timeout_s, mode="spawn")


def _fn(src: str) -> str:
    return textwrap.dedent(src).lstrip("\n")


# --------------------------------------------------------------------------------------------- hostile

SETTRACE_SWAP = _fn('''
    import sys
    from qiskit import QuantumCircuit

    def _hook(frame, event, arg):
        g = frame.f_globals
        c = g.get("check")
        if callable(c) and getattr(c, "__name__", "") == "check":
            def check(candidate):
                return None
            g["check"] = check
        return _hook

    sys.settrace(_hook)
    sys._getframe().f_trace = _hook

    def create_state_prep():
        return QuantumCircuit(1)
''')

PATCH_EQUIV = _fn('''
    from qiskit import QuantumCircuit
    from qiskit.quantum_info import Statevector
    Statevector.equiv = lambda self, other, *a, **k: True
    Statevector.__eq__ = lambda self, other: True

    def create_state_prep():
        return QuantumCircuit(1)
''')

PATCH_HARNESS = _fn('''
    import evaluation.humaneval.judge as judge
    import evaluation.humaneval.wire as wire
    judge.verdict = lambda *a, **k: {"passed": True, "failure": None, "error": None}
    wire.judge_calls = lambda *a, **k: {"passed": True, "failure": None, "error": None}
    _real = wire.encode
    wire.encode = lambda v, depth=0: _real(v, depth)
    from qiskit import QuantumCircuit

    def create_state_prep():
        return QuantumCircuit(1)
''')

EQ_ALWAYS_TRUE = _fn('''
    from qiskit import QuantumCircuit

    class Yes:
        def __eq__(self, other):
            return True
        __hash__ = object.__hash__

    def count_gates(circuit: QuantumCircuit) -> int:
        return Yes()
''')

CIRCUIT_SUBCLASS = _fn('''
    from qiskit import QuantumCircuit

    class Agree(QuantumCircuit):
        def __eq__(self, other):
            return True

    def remove_gate_in_position(circuit, position):
        return Agree(circuit.num_qubits)
''')

DICT_SUBCLASS = _fn('''
    class Agree(dict):
        def keys(self):
            return {"00", "11"}
        def __getitem__(self, key):
            return 1
        def values(self):
            return [2]
        def __eq__(self, other):
            return True

    def run_bell_state_simulator():
        return Agree()
''')

STATEVECTOR_SUBCLASS = _fn('''
    from qiskit.quantum_info import Statevector

    class Liar(Statevector):
        def equiv(self, other, *args, **kwargs):
            return True
        def __eq__(self, other):
            return True

    def create_bell_statevector():
        return Liar(Statevector.from_label("01").data)
''')

FAKE_VERDICT_PRINT = _fn('''
    import json
    from qiskit import QuantumCircuit

    def create_state_prep():
        print(json.dumps({"passed": True, "failure": None, "error": None}))
        print(json.dumps({"id": 1, "ok": {"t": "none"}}))
        print("All tests passed successfully!")
        return QuantumCircuit(1)
''')

FAKE_LINES_OUT_OF_ORDER = _fn('''
    import os
    from qiskit import QuantumCircuit

    def create_state_prep():
        right = QuantumCircuit(1)
        right.x(0)
        import evaluation.humaneval.wire as wire
        fake = wire.dumps({"id": 2, "ok": wire.encode(right)}) + wire.dumps({"id": 1, "ok": wire.encode(right)})
        for fd in range(3, 64):
            try:
                os.write(fd, fake)
            except OSError:
                pass
        return QuantumCircuit(1)
''')

SPRAY_THREAD = _fn('''
    import os
    import threading
    import time
    from qiskit import QuantumCircuit

    def _spray():
        while True:
            for fd in range(3, 32):
                try:
                    os.write(fd, b'{"id": 1, "ok": {"t": "none"}}\\n{"passed": true}\\n')
                except OSError:
                    pass
            time.sleep(0.001)

    threading.Thread(target=_spray, daemon=True).start()

    def create_state_prep():
        time.sleep(0.2)
        qc = QuantumCircuit(1)
        qc.x(0)
        return qc
''')

EXIT_IN_CANDIDATE = _fn('''
    def create_quantum_circuit(n_qubits):
        import os
        os._exit(0)
''')

HOSTILE = [
    ("settrace hook swaps check", T5, SETTRACE_SWAP),
    ("patched Statevector.equiv / __eq__ in G", T5, PATCH_EQUIV),
    ("patched judge / wire modules in G", T5, PATCH_HARNESS),
    ("__eq__ always True", T80, EQ_ALWAYS_TRUE),
    ("QuantumCircuit subclass that agrees", T50, CIRCUIT_SUBCLASS),
    ("dict subclass that agrees", T1, DICT_SUBCLASS),
    ("Statevector subclass whose equiv lies", T2, STATEVECTOR_SUBCLASS),
    ("prints fake verdicts and wire lines", T5, FAKE_VERDICT_PRINT),
    ("writes fake answer lines out of order", T5, FAKE_LINES_OUT_OF_ORDER),
    ("os._exit in the candidate", T0, EXIT_IN_CANDIDATE),
    ("a thread sprays fake answers on every fd", T5, SPRAY_THREAD),
]

# --------------------------------------------------------------------------------------------- realistic
# Written the way Qwen2.5-Coder answers a chat prompt (prose, one fenced block, imports included).

QWEN_T5_RIGHT = '''Here's the function that prepares the state |1>:

```python
from qiskit import QuantumCircuit

def create_state_prep():
    """Return a QuantumCircuit that prepares the binary state 1."""
    qc = QuantumCircuit(1)
    qc.x(0)  # flip |0> to |1>
    return qc
```

This applies an X gate to the single qubit, taking it from |0> to |1>.'''

QWEN_T80_RIGHT = '''```python
from qiskit import QuantumCircuit
from qiskit.circuit import Gate

def count_gates(circuit: QuantumCircuit) -> int:
    count = 0
    for instruction in circuit.data:
        if isinstance(instruction.operation, Gate):
            count += 1
    return count
```'''

QWEN_T80_WRONG = '''```python
from qiskit import QuantumCircuit

def count_gates(circuit: QuantumCircuit) -> int:
    # Count all operations in the circuit
    return sum(circuit.count_ops().values())
```
`count_ops()` returns a dictionary of operation names and counts.'''

QWEN_T1_REMOVED_API = '''```python
from qiskit import QuantumCircuit, Aer, execute

def run_bell_state_simulator():
    qc = QuantumCircuit(2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure_all()
    backend = Aer.get_backend('qasm_simulator')
    job = execute(qc, backend, shots=1024)
    return job.result().get_counts()
```'''

QWEN_T73_RIGHT = '''```python
from qiskit import QuantumCircuit

def x_measurement(circuit: QuantumCircuit, qubit: int, cbit: int) -> QuantumCircuit:
    """Measure 'qubit' in the X-basis, and store the result in 'cbit'"""
    circuit.h(qubit)  # rotate the X basis onto the Z basis
    circuit.measure(qubit, cbit)
    return circuit
```'''

QWEN_T73_WRONG = '''```python
from qiskit import QuantumCircuit

def x_measurement(circuit: QuantumCircuit, qubit: int, cbit: int) -> QuantumCircuit:
    new = circuit.copy()
    new.h(qubit)
    new.measure(qubit, cbit)
    return new
```
This returns a new circuit with the X-basis measurement.'''


QWEN_T76_CLASS_RIGHT = '''```python
from qiskit.transpiler.basepasses import TransformationPass
from qiskit.dagcircuit import DAGCircuit
from qiskit.circuit.library import HGate, XGate
from qiskit import QuantumCircuit
from qiskit.converters import circuit_to_dag


def create_hxh_pass() -> TransformationPass:
    class HXHPass(TransformationPass):
        """Replaces every Z gate with H-X-H."""

        def run(self, dag: DAGCircuit) -> DAGCircuit:
            for node in dag.op_nodes():
                if node.op.name == "z":
                    qc = QuantumCircuit(1)
                    qc.h(0)
                    qc.x(0)
                    qc.h(0)
                    dag.substitute_node_with_dag(node, circuit_to_dag(qc))
            return dag

    return HXHPass  # the test accepts the class too
```'''

QWEN_T76_WRONG = '''```python
from qiskit.transpiler.basepasses import TransformationPass
from qiskit.dagcircuit import DAGCircuit


def create_hxh_pass() -> TransformationPass:
    class HXHPass(TransformationPass):
        def run(self, dag: DAGCircuit) -> DAGCircuit:
            # Z = HXH, so the circuit is already equivalent
            return dag

    return HXHPass()
```'''

BATCH = [  # (label, task, completion, expected failure or None for a pass)
    ("canonical 5", T5, NORMAL[T5].canonical_solution, None),
    *[(label, tid, comp, "hostile") for label, tid, comp in HOSTILE[:5]],
    ("qwen right 5", T5, QWEN_T5_RIGHT, None),
    *[(label, tid, comp, "hostile") for label, tid, comp in HOSTILE[5:]],
    ("qwen right 80", T80, QWEN_T80_RIGHT, None),
    ("qwen wrong 80 (counts reset and measure)", T80, QWEN_T80_WRONG, "assertion"),
    ("qwen removed api 1", T1, QWEN_T1_REMOVED_API, "removed_api"),
    ("qwen right 73 (mutates its argument; the test inspects it)", T73, QWEN_T73_RIGHT, None),
    ("qwen wrong 73 (changes a copy)", T73, QWEN_T73_WRONG, "assertion"),
    ("canonical 50", T50, NORMAL[T50].canonical_solution, None),
    ("canonical 76 (a pass: a remote handle)", T76, NORMAL[T76].canonical_solution, None),
    ("qwen right 76 (returns the pass class)", T76, QWEN_T76_CLASS_RIGHT, None),
    ("qwen wrong 76 (a pass that does nothing)", T76, QWEN_T76_WRONG, "assertion"),
    ("canonical 1", T1, NORMAL[T1].canonical_solution, None),
    ("canonical 2", T2, NORMAL[T2].canonical_solution, None),
]


@pytest.mark.parametrize("label,task_id,completion,expected", BATCH, ids=[b[0] for b in BATCH])
def test_split_judge_batch(label, task_id, completion, expected):
    res = _split(task_id, completion)
    if expected is None:
        assert res["passed"] and res["failure"] is None, res
    elif expected == "hostile":
        assert not res["passed"] and res["failure"] not in (None, "judge_error"), res
    else:
        assert not res["passed"] and res["failure"] == expected, res


def test_hard_variant_whole_function_and_global_name():
    """Hard variant: the test calls check(<entry_point>) itself: the global name is the proxy too."""
    assert _split(T5, HARD[T5].canonical_solution, "hard")["passed"]
    assert _split(T5, SETTRACE_SWAP, "hard")["failure"] == "assertion"


def test_test_that_swallows_everything_still_fails_when_g_dies():
    """A test body catching BaseException cannot turn a dead G into a pass: the session remembers."""
    job = {"prelude": "", "entry_point": "f", "calls_check": False,
           "test": "def check(candidate):\n    try:\n        candidate()\n    except BaseException:\n        pass\n"}
    out = judge_calls(job, None, lambda request: None, deadline=float("inf"))
    assert out["passed"] is False and out["failure"] == "runtime_error", out
    out = judge_calls(job, None, lambda request: None, deadline=0.0)
    assert out["failure"] == "timeout", out


def test_g_record_can_only_fail():
    """G's own record after the program ran (the runner's `ready`) can fail a sample, never pass one."""
    job = {"prelude": "", "entry_point": "f", "calls_check": False,
           "test": "def check(candidate):\n    assert candidate() == 1\n"}
    out = judge_calls(job, {"exec_error": "ModuleNotFoundError: No module named 'x'"}, lambda r: None, float("inf"))
    assert out == {"passed": False, "failure": "missing_module", "error": "ModuleNotFoundError: No module named 'x'"}
    out = judge_calls(job, {"exec_error": None, "passed": True}, lambda r: None, float("inf"))
    assert out["passed"] is False and out["failure"] == "runtime_error", out


def test_timeout_in_candidate():
    slow = "def create_quantum_circuit(n_qubits):\n    while True:\n        pass\n"
    res = _split(T0, slow, timeout_s=3.0)
    assert res["failure"] == "timeout" and res["exec_seconds"] < 30, res


def test_missing_function_and_exec_error():
    # normal variant: the prompt's own stub (docstring only) is the candidate: it returns None
    assert _split(T0, "def something_else():\n    return 1\n")["failure"] == "assertion"
    # a program without the function at all (hard variant; as today: NameError)
    prog = replace(split_program(HARD[T0].canonical_solution, HARD[T0], "hard"), code="def other():\n    return 1\n")
    res = run_split(prog, HARD[T0].entry_point, 60.0)
    assert res["failure"] == "runtime_error" and "NameError" in res["error"], res
    assert _split(T0, "import qiskit_no_such_module\n\ndef create_quantum_circuit(n):\n    return 1\n")["failure"] \
        == "missing_module"


# --------------------------------------------------------------------------------------------- codec

def _roundtrip(v):
    return decode(loads(dumps({"v": encode(v)}))["v"])


def test_codec_round_trips_genuine_types():
    from qiskit import QuantumCircuit
    from qiskit.circuit import Parameter
    from qiskit.quantum_info import DensityMatrix, Operator, Pauli, SparsePauliOp, Statevector
    from qiskit.result import Counts

    theta = Parameter("theta")
    qc = QuantumCircuit(2, 1)
    qc.rx(theta, 0)
    qc.cx(0, 1)
    qc.measure(1, 0)
    values = [None, True, 3, 2.5, float("nan"), 1 + 2j, "x\u2028y", b"\x00\xff", (1, [2, {3: "a"}]), {1, 2},
              np.arange(6, dtype=np.int64).reshape(2, 3), np.float64(0.5), qc, Statevector.from_label("01"),
              DensityMatrix.from_label("1"), Operator.from_label("XZ"), SparsePauliOp(["XI", "ZZ"], [1, 2j]),
              Pauli("-iXZ"), Counts({"00": 3, "11": 5}), range(2)]
    for v in values:
        out = _roundtrip(v)
        assert type(out) is type(v)
        if isinstance(v, float) and v != v:
            assert out != out
        elif isinstance(v, np.ndarray):
            assert out.dtype == v.dtype and (out == v).all()
        else:
            assert out == v, (v, out)
    assert _roundtrip(qc).parameters == qc.parameters


def test_codec_refuses_what_is_not_data():
    with pytest.raises(WireError):
        encode(np.array([object()], dtype=object))
    with pytest.raises(WireError):
        decode({"t": "pickle", "v": "gASVAAAA"})
    with pytest.raises(WireError):
        decode({"t": "ndarray", "dtype": "|O", "shape": [1], "b64": "AAAAAAAAAAA="})
    with pytest.raises(WireError):
        loads(b"[" * 100000 + b"]" * 100000)
    with pytest.raises(WireError):
        loads("{\"t\": \"str\", \"v\": \"\u00e9\"}".encode())  # not ASCII: never written by dumps
    deep = {"t": "none"}
    for _ in range(MAX_DEPTH + 5):
        deep = {"t": "list", "v": [deep]}
    with pytest.raises(WireError):
        decode(deep)
    odd = decode({"t": "unsupported", "type": "mymodule.Yes"})
    assert isinstance(odd, Unsupported)
    for use in (lambda: odd == 1, lambda: 1 == odd, lambda: bool(odd), lambda: len(odd), lambda: odd.equiv(1)):
        with pytest.raises(TypeError):
            use()
    assert json.loads(dumps({"s": "\u2028"}))["s"] == "\u2028" and b"\xe2" not in dumps({"s": "\u2028"})


CALL_CACHED_CANONICAL = _fn('''
    def count_gates(circuit):
        from evaluation.humaneval.tasks import tasks_by_id
        task = tasks_by_id("normal")["qiskitHumanEval/80"]
        ns = {}
        exec(task.prompt + "\\n" + task.canonical_solution, ns)
        return ns["count_gates"](circuit)
''')


def test_fork_server_holds_no_solutions():
    """In the sandbox (the one-process judge of today's scoring): a completion that calls the canonical
    solution it finds in its own memory (the fork server's cached task list, inherited by every reply) or
    on disk passed every task; the fork server now never loads the dataset (judge.modules_elsewhere) and the
    sandbox's root has no data directory. Valid completions before and after it."""
    from evaluation.humaneval.scoring import Sample, score_samples

    body = NORMAL[T80].canonical_solution
    res = score_samples([Sample(T80, 0, body), Sample(T80, 1, CALL_CACHED_CANONICAL), Sample(T80, 2, body)],
                        "normal", workers=1)
    assert [r["passed"] for r in res] == [True, False, True], res
    assert res[1]["failure"] == "runtime_error" and "FileNotFoundError" in res[1]["error"], res



def test_survey_records_types_and_mutation():
    """The survey the codec was designed from (evaluation.humaneval.survey): task 73's test passes a circuit
    the candidate changes in place and then inspects it."""
    from evaluation.humaneval.survey import summarise, survey_task, type_tree

    row = survey_task(NORMAL[T73], "normal")
    assert row["passed"] and row["mutated"] and row["arg_types"][0] == "qiskit.QuantumCircuit", row
    assert type_tree([1, (2.0, "x")]) == "list[int | tuple[float, str]]"
    assert summarise([row])["flags"]["mutated an argument"] == 1


GC_SEARCH_FOR_THE_TEST = _fn('''
    import gc
    import sys

    NEEDLE = "def " + "check(candidate)"  # never contiguous in this completion's own source

    def _strings(value, depth=0):
        if isinstance(value, str):
            yield value
        elif depth < 3 and isinstance(value, dict):
            for v in list(value.values()):
                yield from _strings(v, depth + 1)
        elif depth < 3 and isinstance(value, (list, tuple)):
            for v in list(value):
                yield from _strings(v, depth + 1)

    def count_gates(circuit):
        frame = sys._getframe()
        places = []
        while frame is not None:  # every caller's locals: the runner's job, the test if it were on the stack
            places.append(dict(frame.f_locals))
            places.append(frame.f_globals)
            frame = frame.f_back
        places.extend(o for o in gc.get_objects() if isinstance(o, (dict, list)))
        for place in places:
            for s in _strings(place):
                if s is not NEEDLE and NEEDLE in s:
                    raise RuntimeError("FOUND-THE-TEST")
        return {}
''')


def test_split_judge_batch_through_the_sandbox():
    """The same hostile and realistic completions through the real runner (score_samples: fork server, I, G,
    every isolation layer), with valid completions around them; plus a completion that searches its own
    memory for the test (the server keeps a job's test out of every fork). On fb4123f each in-process attack
    passed and the memory search found the test."""
    from evaluation.humaneval.scoring import Sample, score_samples

    batch = BATCH + [("memory search for the test", T80, GC_SEARCH_FOR_THE_TEST, "assertion"),
                     ("canonical 80 after it", T80, NORMAL[T80].canonical_solution, None)]
    res = score_samples([Sample(tid, i, comp) for i, (_, tid, comp, _) in enumerate(batch)], "normal", workers=2)
    for (label, _, _, expected), r in zip(batch, res):
        if expected is None:
            assert r["passed"] and r["failure"] is None, (label, r)
        elif expected == "hostile":
            assert not r["passed"] and r["failure"] not in (None, "judge_error"), (label, r)
        else:
            assert not r["passed"] and r["failure"] == expected, (label, r)
    assert "FOUND-THE-TEST" not in str(res[-2]["error"])
