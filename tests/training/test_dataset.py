"""The generated dataset passes the evaluation verifier 100 %, never contains an evaluation prompt,
and is deterministic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation.prompts import build_prompts
from evaluation.scoring import score_replies
from quantummind.paths import REPO_ROOT
from quantummind.training.dataset import FAMILIES, generate_dataset, normalise

PREPARE = REPO_ROOT / "fine-tuning" / "prepare_dataset.py"


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def full_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full-data")
    proc = subprocess.run([sys.executable, str(PREPARE), "--out", str(out), "--num-examples", "120",
                           "--seed", "7"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out


def _rescore(records: list[dict]) -> list[dict]:
    """Independently re-verify: recover each example's Hamiltonian and qubit count from its prompt."""
    by_name = sorted(FAMILIES.values(), key=lambda f: -len(f.name))
    jobs = []
    for i, rec in enumerate(records):
        user, reply = rec["messages"][1]["content"], rec["messages"][2]["content"]
        fam = next(f for f in by_name if f.name in user)
        n = int(next(tok.split("-")[0] for tok in user.replace(",", " ").split()
                     if tok.split("-")[0].isdigit()))
        constraint = next((c for c in ("Use only RY and CX gates", "Minimize circuit depth",
                                       "Use a hardware-efficient structure", "Include entangling layers")
                           if c in user), "")
        jobs.append({"id": str(i), "hamiltonian": fam.verify_as, "num_qubits": n, "constraint": constraint,
                     "reply": reply})
    return score_replies(jobs)


def _independent_check(rec: dict, n: int) -> str | None:
    """Not the judge that filtered the data: run the example's python fence (generated, trusted) and check its
    circuit with plain qiskit: a module-level circuit with free parameters, n qubits, depth <= 50 once composite
    gates are decomposed into standard ones (barriers aside; `decompose(reps=6)` of every gate made the global
    phase expressions of an RXX/RYY/RZZ ansatz grow without end). None when it holds, else why not."""
    import re

    from qiskit import QuantumCircuit
    from qiskit.circuit.library import get_standard_gate_name_mapping

    code = re.search(r"```python\n(.*?)```", rec["messages"][2]["content"], re.S).group(1)
    ns: dict = {"__name__": "__main__"}
    exec(compile(code, "example.py", "exec"), ns)
    circuits = [v for v in ns.values() if isinstance(v, QuantumCircuit) and v.num_parameters > 0]
    if not circuits:
        return "no module-level circuit with free parameters"
    standard = set(get_standard_gate_name_mapping()) | {"barrier", "delay", "measure"}
    for qc in circuits:
        flat = qc
        for _ in range(6):  # composite (library) gates down to standard ones; a standard gate is kept as it is
            composite = {inst.operation.name for inst in flat.data} - standard
            if not composite:
                break
            flat = flat.decompose(gates_to_decompose=sorted(composite))
        depth = flat.depth(filter_function=lambda inst: inst.operation.name not in ("barrier", "delay"))
        if qc.num_qubits == n and depth <= 50:
            return None
    return f"qubits {[c.num_qubits for c in circuits]} (want {n}), depths above 50 or wrong size"


def test_full_dataset_passes_verifier_and_has_no_eval_overlap(full_dataset):
    train, val = read(full_dataset / "train.jsonl"), read(full_dataset / "val.jsonl")
    assert len(train) + len(val) == 120 and len(val) >= 1
    records = train + val
    for rec in records:
        roles = [m["role"] for m in rec["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert "```python\n" in rec["messages"][2]["content"]
    results = _rescore(records)
    failed = [r for r in results if not (r["syntax_valid"] and r["verification_pass"] and r["bp_free"]
                                         and r.get("constraint_satisfied") is not False)]
    assert failed == [], failed[:3]
    # the same judge filtered the data, so a judge that passes everything would pass the line above too
    wanted = {int(r["id"]): int(r["num_qubits"]) for r in results}  # parsed from each example's prompt
    problems = {i: _independent_check(rec, wanted[i]) for i, rec in enumerate(records)}
    assert not any(problems.values()), {i: p for i, p in problems.items() if p}
    eval_keys = {normalise(p.prompt) for p in build_prompts(100)}
    assert not eval_keys & {normalise(r["messages"][1]["content"]) for r in records}
    train_keys = {json.dumps(r) for r in train}
    assert not train_keys & {json.dumps(r) for r in val}
    card = (full_dataset / "dataset_card.md").read_text()
    assert "Overlap in the written data: **0**" in card and "rejected by the verifier" in card


def test_full_dataset_is_diverse(full_dataset):
    text = (full_dataset / "train.jsonl").read_text()
    for marker in ("ParameterVector", "Parameter(", "def ", "qiskit.circuit.library", "rxx", ".cz(", ".cx("):
        assert marker in text, marker
    for fam in FAMILIES.values():
        assert fam.name in text


def test_same_seed_same_files(tmp_path):
    a = generate_dataset(tmp_path / "a", num_examples=20, seed=3, style="simple")
    b = generate_dataset(tmp_path / "b", num_examples=20, seed=3, style="simple")
    for name in ("train.jsonl", "val.jsonl"):
        assert (a.out_dir / name).read_bytes() == (b.out_dir / name).read_bytes()


def test_rejected_examples_are_dropped_and_reported(tmp_path):
    """A scorer that fails every third reply: those never reach the files and the card counts them."""
    calls = {"n": 0}

    def picky(records, workers):
        out = []
        for rec in records:
            calls["n"] += 1
            ok = calls["n"] % 3 != 0
            out.append({"syntax_valid": True, "verification_pass": ok, "bp_free": ok if ok else None,
                        "error": None if ok else "depth 99 > 50"})
        return out

    report = generate_dataset(tmp_path, num_examples=30, seed=0, style="full", scorer=picky)
    assert report.num_train + report.num_val == 30 and report.rejected >= 10
    assert "not verification_pass" in (tmp_path / "dataset_card.md").read_text()


def test_cli_rejects_bad_arguments(tmp_path):
    proc = subprocess.run([sys.executable, str(PREPARE), "--out", str(tmp_path), "--num-examples", "1"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--num-examples" in proc.stderr
