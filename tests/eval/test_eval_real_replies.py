"""The judge on replies written the way real code LLMs answer the seed's prompts (issue 9).

tests/eval/real_replies/replies.yaml holds the corpus: each reply labelled with the verdict and the `failure`
a careful human reviewer gives it (written before the judge ran on it). Every label must agree.
"""

from __future__ import annotations

from collections import Counter

import pytest
import yaml

from evaluation.failures import FAILURES, REMOVED_APIS, classify_exec_error, lookup_removed
from evaluation.comparison import compare_failures
from evaluation.report import Thresholds, summarize
from evaluation.scoring import score_replies

from eval_replies_cases import fence, load_corpus, record, score_corpus

CORPUS = load_corpus("replies.yaml")
BY_ID = {case["id"]: case for case in CORPUS}


@pytest.fixture(scope="module")
def scored() -> dict[str, dict]:
    return score_corpus(CORPUS)


def test_corpus_is_large_and_varied():
    assert len(CORPUS) >= 60 and len(BY_ID) == len(CORPUS)
    styles = Counter(c["style"] for c in CORPUS)
    assert styles["qwen"] >= 20 and styles["llama"] >= 20
    assert all(c["failure"] is None or c["failure"] in FAILURES for c in CORPUS)
    assert all((c["verdict"] == "pass") == (c["failure"] is None) for c in CORPUS)


@pytest.mark.parametrize("case_id", list(BY_ID))
def test_label_agrees(scored, case_id):
    case, res = BY_ID[case_id], scored[case_id]
    got = (res["verification_pass"], res["failure"], res["removed_api_name"])
    want = (case["verdict"] == "pass", case["failure"], case.get("removed_api_name"))
    assert got == want, f"{case_id}: {case['note']}\n error: {res.get('error')}\n found_by: {res.get('found_by')}"
    if case["failure"] == "removed_api":
        row = lookup_removed(case["removed_api_name"])
        assert res["removed_in"] == row.removed_in and case["removed_api_name"] in res["removed_apis"]
    if res["verification_pass"]:
        assert res["num_qubits_found"] == case["num_qubits"] and res["num_parameters"] > 0


def test_found_by_keeps_its_forms(scored):
    forms = Counter(str(r.get("found_by")).split(" ")[0] for r in scored.values() if r["verification_pass"])
    assert set(forms) <= {"variable", "call", "local"} and forms["variable"] and forms["call"] and forms["local"]
    assert scored["q07_ansatz_and_bound_circuit"]["found_by"] == "variable ansatz"
    assert scored["q18_fake_backend_transpile"]["found_by"] == "variable var_form"
    assert scored["l37_main_with_create_function"]["found_by"] == "call create_ansatz()"
    assert scored["q36_main_only_locals"]["found_by"] == "local ansatz in main()"


def test_whole_answers_and_fallbacks(scored):
    usage = scored["q02_function_then_usage"]
    assert usage["code_rule"] == "whole answer" and "create_variational_circuit(6, 2)" in usage["code"]
    alt = scored["l42_alternatives_one_removed"]  # the whole answer fails on execute; the modern fence alone passes
    assert alt["code_rule"].startswith("fence alone") and "execute" not in alt["code"]
    assert alt["whole_answer_error"].startswith("ImportError") and "qiskit.execute" in alt["removed_apis"]
    assert scored["q44_output_blocks"]["code"].count("```") == 0 and "q_0:" not in scored["q44_output_blocks"]["code"]


def test_summary_counts_failures_and_api_drift(scored):
    results = list(scored.values())
    s = summarize(results, Thresholds())
    want = Counter(c["failure"] for c in CORPUS if c["failure"])
    assert s["failures"] == dict(want)
    drift = sum(bool(c["failure"] == "removed_api" or c["id"] == "l42_alternatives_one_removed") for c in CORPUS)
    assert s["api_drift_rate"] == pytest.approx(100 * drift / len(CORPUS), abs=0.01)
    assert s["removed_apis"]["qiskit.execute"] == 3  # l04, l42 and l67
    passed = [r for r in results if r["verification_pass"]]  # of these, only l42 uses a removed API
    rows, comp = compare_failures(s, summarize(passed, Thresholds()))
    assert rows[0][0].startswith("API drift")
    assert comp["api_drift_rate"]["b"] == pytest.approx(100 / len(passed), abs=0.01)
    assert comp["removed_api"] == {"a": want["removed_api"], "b": 0}


def test_aer_threads_after_fork_do_not_hang():
    """qiskit_aer is imported in the fork server (OMP_NUM_THREADS=1) before the fork: a reply asking Aer
    for 4 threads still runs to the end in the sandbox."""
    code = ("import numpy as np\nfrom qiskit import transpile\nfrom qiskit.circuit.library import efficient_su2\n"
            "from qiskit_aer import AerSimulator\nansatz = efficient_su2(4, reps=1)\n"
            "big = efficient_su2(12, reps=2).assign_parameters(np.full(72, 0.3))\nbig.measure_all()\n"
            "sim = AerSimulator(max_parallel_threads=4, statevector_parallel_threshold=4)\n"
            "print(len(sim.run(transpile(big, sim), shots=256).result().get_counts()))\n")
    res = score_replies([record("aer", fence(code))], workers=1)[0]
    assert res["verification_pass"] and res["failure"] is None and int(res["stdout_tail"].strip()) > 1


def test_removed_api_table_cites_release_notes():
    assert all(row.source.startswith(("https://quantum.cloud.ibm.com/docs/", "https://github.com/qiskit-community/"))
               and row.removed_in for row in REMOVED_APIS)
    assert not any("deprecated" in row.removed_in for row in REMOVED_APIS)  # a removal, never a deprecation
    assert lookup_removed("qiskit.opflow.PauliSumOp").name == "qiskit.opflow"
    assert lookup_removed("qiskit.primitives.StatevectorEstimator") is None
    assert lookup_removed("qiskit_aer.AerSimulator") is None


def test_classify_exec_error_keeps_its_signature_and_reads_the_code():
    assert classify_exec_error(None) is None
    assert classify_exec_error("ZeroDivisionError: division by zero") == "runtime_error"
    assert classify_exec_error("ModuleNotFoundError: No module named 'networkx'") == "missing_module"
    assert classify_exec_error("ImportError: cannot import name 'execute' from 'qiskit' (/x/qiskit/__init__.py)") \
        == "removed_api"
    # a message that names no table row: blamed on a removed import only when it names that import
    assert classify_exec_error("ImportError: DLL load failed") == "missing_module"
    assert classify_exec_error("ImportError: DLL load failed", "from qiskit.opflow import X\n") == "missing_module"
    assert classify_exec_error("ImportError: cannot import name 'PauliSumOp'",
                               "from qiskit.opflow import PauliSumOp\n") == "removed_api"
    guarded = "try:\n    from qiskit.opflow import PauliSumOp\nexcept ImportError:\n    PauliSumOp = None\n"
    assert classify_exec_error("ImportError: cannot import name 'PauliSumOp'", guarded) == "missing_module"
    # Landlock's bare EACCES on connect() is the network; a denied file write is the sandbox
    assert classify_exec_error("PermissionError: [Errno 13] Permission denied", "import socket\n") == "needs_network"
    assert classify_exec_error("PermissionError: [Errno 13] Permission denied: '/work/x'", "open('/work/x', 'w')") \
        == "sandbox_denied"
    assert classify_exec_error("OSError: [Errno 101] Network is unreachable") == "needs_network"


def test_log_report_and_comparison_show_failures_and_drift(scored, tmp_path):
    from evaluation.comparison import write_comparison
    from evaluation.report import write_report, write_results, write_validation_log

    results = list(scored.values())
    runs = {"base": results, "tuned": [r for r in results if r["failure"] != "removed_api"]}
    for name, rs in runs.items():
        out = tmp_path / name
        out.mkdir()
        s = summarize(rs, Thresholds())
        write_results(out, rs)  # compare pairs the replies by id from results.jsonl
        log = yaml.safe_load(write_validation_log(out, s, model=name, endpoint=None, thresholds=Thresholds()).read_text())
        assert log["failures"] == s["failures"] and log["api_drift_rate"] == s["api_drift_rate"]
        assert log["verification_rate"] == pytest.approx(100 * sum(r["verification_pass"] for r in rs) / len(rs), abs=0.01)
        report = write_report(out, s, Thresholds(), model=name, endpoint=None).read_text()
        assert "## Failures" in report and f"API drift: **{s['api_drift_rate']:.1f} %**" in report
    comp = write_comparison(tmp_path / "base", tmp_path / "tuned", tmp_path / "cmp")
    drift_a = 100 * sum(bool(r["removed_apis"]) for r in runs["base"]) / len(runs["base"])
    drift_b = 100 * sum(bool(r["removed_apis"]) for r in runs["tuned"]) / len(runs["tuned"])
    assert comp["failures"]["api_drift_rate"]["a"] == pytest.approx(drift_a, abs=0.01)
    assert comp["failures"]["api_drift_rate"]["b"] == pytest.approx(drift_b, abs=0.01)
    text = (tmp_path / "cmp" / "report.md").read_text()
    assert "API drift (removed APIs) %" in text and "failure: removed_api %" in text
