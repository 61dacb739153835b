import pytest

from evaluation.extract import extract_code, extract_program
from evaluation.hamiltonians import TFIM_FIELD, get_hamiltonian
from evaluation.prompts import CONSTRAINTS, HAMILTONIANS, QUBIT_COUNTS, SYSTEM_PROMPT, build_prompts, user_prompt


def test_45_combinations_cycled_with_distinct_ids():
    prompts = build_prompts(100)
    assert len(prompts) == 100 and len({p.id for p in prompts}) == 100
    combos = {(p.hamiltonian, p.num_qubits, p.constraint) for p in prompts}
    assert len(combos) == 45 == len(HAMILTONIANS) * len(QUBIT_COUNTS) * len(CONSTRAINTS)
    assert (prompts[45].hamiltonian, prompts[45].num_qubits, prompts[45].constraint) == \
        (prompts[0].hamiltonian, prompts[0].num_qubits, prompts[0].constraint)
    assert prompts[0].messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert prompts[0].messages[1]["content"] == prompts[0].prompt


def test_seed_wording():
    assert user_prompt("xy_chain", 4, "") == "Create a 4-qubit variational circuit for the XY chain Hamiltonian ground state."
    assert user_prompt("tfim", 8, "Use only RY and CX gates").endswith("ground state. Use only RY and CX gates")


@pytest.mark.parametrize("key,n,expected", [
    ("heisenberg", 4, -3 - 2 * 3 ** 0.5),     # open Heisenberg chain, 4 sites: -3 - 2*sqrt(3)
    ("xy_chain", 4, -2 * 5 ** 0.5),            # free fermions: -2*sqrt(5)
])
def test_known_ground_energies(key, n, expected):
    assert get_hamiltonian(key, n).ground_energy == pytest.approx(expected, abs=1e-10)


def test_operators_and_tfim_field():
    h = get_hamiltonian("tfim", 4)
    labels = dict(zip(h.operator.paulis.to_labels(), h.operator.coeffs.real))
    assert labels["IIZZ"] == 1.0 and labels["IIIX"] == TFIM_FIELD and len(labels) == 3 + 4
    assert len(get_hamiltonian("heisenberg", 6).operator) == 15
    assert get_hamiltonian("xy_chain", 8).operator.num_qubits == 8


def test_extract_whole_answer_skips_bash_and_keeps_the_circuit_fence_as_fallback():
    reply = ("Install:\n```bash\npip install qiskit\n```\nImports:\n```python\nimport numpy as np\n```\n"
             "Circuit:\n```python\nfrom qiskit import QuantumCircuit\nqc = QuantumCircuit(2)\n```\n"
             "Usage:\n```python\nprint(qc)\n```\n")
    program = extract_program(reply)
    # the python fences in order, as one file (the bash fence skipped)
    assert program.code == "import numpy as np\n\nfrom qiskit import QuantumCircuit\nqc = QuantumCircuit(2)\n\nprint(qc)"
    assert program.rule == "whole answer"
    # the only fence that builds a circuit is the fallback if the whole answer fails
    assert program.fallbacks == ["from qiskit import QuantumCircuit\nqc = QuantumCircuit(2)"]


def test_extract_drops_fences_that_do_not_compile_only_when_a_compiling_fence_builds_the_circuit():
    truncated_usage = ("```python\nfrom qiskit.circuit.library import efficient_su2\nansatz = efficient_su2(4)\n```\n"
                       "Usage:\n```python\nresult = run(ansatz,\n")
    program = extract_program(truncated_usage)
    assert program.code == "from qiskit.circuit.library import efficient_su2\nansatz = efficient_su2(4)"
    truncated_circuit = "```python\nimport numpy as np\n```\n```python\nfrom qiskit import QuantumCircuit\nqc = QuantumCircuit(\n"
    assert extract_code(truncated_circuit) == "from qiskit import QuantumCircuit\nqc = QuantumCircuit("


def test_extract_skips_printed_output_and_cleans_sessions():
    assert extract_code("```\n{'0000': 512, '1111': 512}\n```\n```text\nEnergy: -7.46\n```") is None
    assert extract_code("```\nEnergy: -7.46\n```") is None
    session = "```pycon\n>>> from qiskit import QuantumCircuit\n>>> qc = QuantumCircuit(2)\n>>> qc.num_qubits\n2\n```"
    assert extract_code(session) == "from qiskit import QuantumCircuit\nqc = QuantumCircuit(2)\nqc.num_qubits"
    assert extract_code("```python\n%matplotlib inline\n!pip install qiskit\nx = 1\n```") == "x = 1"


def test_extract_fallbacks():
    assert extract_code("```\nx = 1\n```") == "x = 1"
    assert extract_code("```python\nx = 2\n") == "x = 2"  # unclosed fence (max_tokens cut)
    prose = "Sure.\nfrom qiskit import QuantumCircuit\nqc = QuantumCircuit(3)\n\nThis builds it."
    assert extract_code(prose) == "from qiskit import QuantumCircuit\nqc = QuantumCircuit(3)"
    assert extract_code("   ") is None
    assert extract_code("```bash\nls\n```") is None
    assert extract_code("just words") == "just words"
