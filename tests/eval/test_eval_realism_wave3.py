"""Issue 19: the circuit judge on replies for each class the wave-3 review found (circuits held in objects,
`sys.exit()` in `main()`, an IBM token behind `input()`, guarded compatibility imports, removed APIs the table
missed, a removed qiskit module not in the table). tests/eval/real_replies/wave3.yaml holds the replies with the
labels written before the judge ran; every label must agree (a regression corpus, not the judge's accuracy)."""

from __future__ import annotations

from collections import Counter

import pytest

from evaluation.failures import FAILURES, lookup_removed
from evaluation.report import Thresholds, summarize

from eval_replies_cases import load_corpus, score_corpus

CORPUS = load_corpus("wave3.yaml")
BY_ID = {case["id"]: case for case in CORPUS}


@pytest.fixture(scope="module")
def scored() -> dict[str, dict]:
    return score_corpus(CORPUS)


def test_corpus_covers_every_class_in_both_styles():
    assert len(BY_ID) == len(CORPUS)
    classes = Counter(c["class"] for c in CORPUS)
    assert set(classes) == {"circuit_in_object", "search_sys_exit", "token_input", "guarded_import",
                            "removed_table", "removed_generic"}
    assert {c["style"] for c in CORPUS} == {"qwen", "llama"}
    assert all(c["failure"] is None or c["failure"] in FAILURES for c in CORPUS)
    assert all((c["verdict"] == "pass") == (c["failure"] is None) for c in CORPUS)


@pytest.mark.parametrize("case_id", list(BY_ID))
def test_label_agrees(scored, case_id):
    case, res = BY_ID[case_id], scored[case_id]
    got = (res["verification_pass"], res["failure"], res["removed_api_name"], res["removed_apis"])
    want = (case["verdict"] == "pass", case["failure"], case.get("removed_api_name"), case["removed_apis"])
    assert got == want, f"{case_id}: {case['note']}\n error: {res.get('error')}\n found_by: {res.get('found_by')}"
    if case["failure"] == "removed_api":
        row = lookup_removed(case["removed_api_name"])
        assert res["removed_in"] == (row.removed_in if row else res["removed_in"]) and res["removed_in"]
    if res["verification_pass"]:
        assert res["num_qubits_found"] == case["num_qubits"] and res["num_parameters"] > 0


def test_circuits_in_objects_are_found_where_they_are(scored):
    assert scored["w01_object_attribute_module_level"]["found_by"] == "variable vqc.circuit"
    assert scored["w02_object_attribute_in_main"]["found_by"] == "local model.ansatz in main()"
    assert scored["w03_list_of_layer_circuits"]["found_by"] == "variable c"  # the loop's last, as before
    assert scored["w04_main_sys_exit"]["found_by"] == "local qc in main()"
    assert scored["w05_main_bare_exit"]["found_by"] == "local circuit in main()"


def test_guarded_imports_are_not_api_drift(scored):
    results = [scored["w08_guarded_aer_import"], scored["w09_guarded_execute_missing_nature"]]
    assert summarize(results, Thresholds())["api_drift_rate"] == 0.0


def _namespace(code: str) -> dict:
    ns: dict = {"__name__": "__main__"}
    try:
        exec(compile(code, "reply.py", "exec"), ns)
    except SystemExit:
        pass
    return ns


ANSATZ = ("from qiskit import QuantumCircuit\nfrom qiskit.circuit import Parameter\n"
          "def layer(n, tag):\n    qc = QuantumCircuit(n)\n"
          "    for i in range(n):\n        qc.ry(Parameter(f'{tag}{i}'), i)\n    return qc\n")


@pytest.mark.parametrize("tail, found", [
    ("circuits = {'shallow': layer(3, 'a'), 'deep': layer(4, 'b')}\n", "variable circuits['deep']"),
    ("circuits = [layer(4, 'a'), layer(4, 'b').assign_parameters([0.1] * 4)]\n", "variable circuits[0]"),
    ("class Holder:\n    def __init__(self):\n        self.layers = [layer(4, 'x')]\nh = Holder()\n", "variable h.layers[0]"),
    ("class V:\n    def __init__(self):\n        self.circuit = layer(4, 'c')\n        self.bound = "
     "self.circuit.assign_parameters([0.2] * 4)\nv = V()\n", "variable v.circuit"),
    ("import sys\ndef main():\n    qc = layer(4, 'm')\n    print(qc)\n    sys.exit(0)\n"
     "if __name__ == '__main__':\n    main()\n", "local qc in main()"),
])
def test_find_circuit_looks_into_containers_objects_and_exiting_main(tail, found):
    from evaluation.verify import find_circuit

    circuit, how = find_circuit(_namespace(ANSATZ + tail), 4)
    assert how == found and circuit.num_parameters > 0


def test_find_circuit_reads_no_property_of_the_reply():
    """Attributes come from the instance's __dict__: a property of the reply's class never runs."""
    from evaluation.verify import find_circuit

    code = ANSATZ + ("class Lazy:\n    ran = []\n    @property\n    def circuit(self):\n"
                     "        Lazy.ran.append(1)\n        return layer(4, 'p')\nlazy = Lazy()\n")
    ns = _namespace(code)
    circuit, how = find_circuit(ns, 4)
    assert circuit is None and how.startswith("no QuantumCircuit found") and ns["Lazy"].ran == []


def test_stack_markers_are_whole_words():
    """`mpl` in "simple"/"example" must not preload matplotlib; `draw("mpl")` must."""
    from evaluation.sandbox.preload import modules_used

    assert modules_used(["# a simple example\nqc = QuantumCircuit(2)\n"]) == []
    assert "matplotlib.pyplot" in modules_used(['qc.draw("mpl")\n'])
    assert modules_used(["from qiskit_aer.primitives import EstimatorV2\n"])[:1] == ["qiskit_aer"]


def test_humaneval_install_check_names_the_tasks_that_would_fail():
    """On this install only the two excluded tasks' modules are missing (a real fact of the pinned stack)."""
    from evaluation.humaneval.judge import missing_task_modules
    from evaluation.humaneval.tasks import exclusions

    assert missing_task_modules(exclusions()) == {}
    everything = missing_task_modules([])
    assert everything["qiskit_ibm_transpiler.transpiler_service"] == ["qiskitHumanEval/122"]


def test_humaneval_canonical_refuses_an_incomplete_install(monkeypatch, tmp_path, capsys):
    """An install without a module the tasks import: `canonical` refuses (exit 2, nothing written) instead of
    reporting the canonical solutions as failing. (A missing package is faked: the test env has them all.)"""
    from evaluation.cli import main
    from evaluation.humaneval import judge

    real = judge._importable
    monkeypatch.setattr(judge, "_importable", lambda name: name != "qiskit_aer" and real(name))
    out = tmp_path / "canon"
    assert main(["humaneval", "canonical", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "cannot import qiskit_aer" in err and "eval extra" in err and not out.exists()
