"""n-gram decontamination against Qiskit HumanEval, and its line in the dataset card."""

from evaluation.humaneval.decontam import NGRAM, humaneval_overlap, tokens
from evaluation.humaneval.tasks import load_tasks
from quantummind.training.dataset import generate_dataset


def test_a_reformatted_canonical_solution_is_found():
    t = load_tasks("hard")[17]
    # same code, other layout and case: still the same tokens
    copied = "Here is my answer:\n" + t.canonical_solution.replace("    ", "\t").upper()
    unrelated = "qc = QuantumCircuit(4)\nfor q in range(4):\n    qc.ry(0.1, q)\n"
    o = humaneval_overlap([unrelated, copied, "hello"])
    assert o.ngram == NGRAM and o.num_texts == 3
    assert o.texts_with_overlap == 1 and o.overlapping == [1]
    assert o.shared_ngrams >= len(tokens(t.canonical_solution)) - NGRAM + 1 - 5  # nearly every n-gram of it
    assert humaneval_overlap([unrelated]).texts_with_overlap == 0


def test_dataset_card_reports_the_humaneval_overlap(tmp_path):
    report = generate_dataset(tmp_path, num_examples=12, seed=2, style="simple")
    assert report.humaneval["texts_with_overlap"] == 0 and report.humaneval["num_texts"] == 12
    card = (tmp_path / "dataset_card.md").read_text()
    assert f"sharing a {NGRAM}-gram" in card and "**0** of 12" in card
