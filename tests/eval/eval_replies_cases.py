"""Hand-written replies shared by the evaluation tests."""

RYCX = '''from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
n = {n}
theta = ParameterVector("t", 2 * n)
qc = QuantumCircuit(n)
for i in range(n):
    qc.ry(theta[i], i)
for i in range(n - 1):
    qc.cx(i, i + 1)
for i in range(n):
    qc.ry(theta[n + i], i)
'''


def fence(code: str, lang: str = "python") -> str:
    return f"Here is the circuit:\n\n```{lang}\n{code}```\n\nIt uses RY rotations."


def rycx(n: int) -> str:
    return RYCX.format(n=n)


def record(rid: str, reply: str, n: int = 4, ham: str = "heisenberg", constraint: str = "") -> dict:
    return {"id": rid, "hamiltonian": ham, "num_qubits": n, "constraint": constraint, "reply": reply}


def load_corpus(name: str) -> list[dict]:
    """A labelled reply corpus from tests/eval/real_replies/ (replies.yaml, wave3.yaml)."""
    from pathlib import Path

    import yaml

    return yaml.safe_load((Path(__file__).parent / "real_replies" / name).read_text())


def score_corpus(corpus: list[dict]) -> dict[str, dict]:
    """Every reply of a corpus scored by the judge, by id."""
    from evaluation.scoring import score_replies

    records = [{"id": c["id"], "hamiltonian": c["hamiltonian"], "num_qubits": c["num_qubits"],
                "constraint": c["constraint"], "reply": c["reply"]} for c in corpus]
    return {r["id"]: r for r in score_replies(records, workers=2)}


def literal_layers(n, reps):
    """RY-RZ layers joined by a linear CX ladder, every count a literal (nothing to rebuild)."""
    return (f"from qiskit import QuantumCircuit\nfrom qiskit.circuit import ParameterVector\n"
            f"theta = ParameterVector('t', {2 * n * (reps + 1)})\nqc = QuantumCircuit({n})\nk = 0\n"
            f"for layer in range({reps + 1}):\n    for q in range({n}):\n"
            f"        qc.ry(theta[k], q)\n        qc.rz(theta[k + 1], q)\n        k += 2\n"
            f"    if layer < {reps}:\n        for q in range({n - 1}):\n            qc.cx(q, q + 1)\n")
