"""The seed's 45 prompt combinations (3 Hamiltonians x 3 sizes x 5 constraints), sent as chat messages."""

from __future__ import annotations

from dataclasses import dataclass, field

SYSTEM_PROMPT = "You are a quantum computing expert that generates Qiskit circuits."

HAMILTONIANS: dict[str, str] = {
    "xy_chain": "XY chain",
    "heisenberg": "Heisenberg chain",
    "tfim": "Transverse-field Ising model",
}

QUBIT_COUNTS: tuple[int, ...] = (4, 6, 8)

CONSTRAINTS: tuple[str, ...] = (
    "Use only RY and CX gates",
    "Minimize circuit depth",
    "Use a hardware-efficient structure",
    "Include entangling layers",
    "",  # no constraint
)


@dataclass(frozen=True)
class PromptSpec:
    id: str
    hamiltonian: str
    num_qubits: int
    constraint: str
    prompt: str
    messages: list[dict[str, str]] = field(hash=False, compare=False)


def user_prompt(hamiltonian_key: str, num_qubits: int, constraint: str) -> str:
    """The seed's user turn for one of the evaluated Hamiltonians."""
    return user_prompt_text(HAMILTONIANS[hamiltonian_key], num_qubits, constraint)


def user_prompt_text(hamiltonian_name: str, num_qubits: int, constraint: str) -> str:
    """The seed's user turn for any named Hamiltonian, without the trailing space it leaves when
    there is no constraint."""
    return f"Create a {num_qubits}-qubit variational circuit for the {hamiltonian_name} Hamiltonian ground state. {constraint}".strip()


def chat_messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]


def base_combinations() -> list[tuple[str, int, str]]:
    """The 45 combinations in the seed's loop order (Hamiltonian, then qubits, then constraint)."""
    return [(h, n, c) for h in HAMILTONIANS for n in QUBIT_COUNTS for c in CONSTRAINTS]


def build_prompts(num_tests: int) -> list[PromptSpec]:
    """Cycle the 45 combinations up to num_tests; ids are distinct (`t0000`, `t0001`, ...)."""
    if num_tests < 1:
        raise ValueError("num_tests must be >= 1")
    combos = base_combinations()
    out: list[PromptSpec] = []
    for i in range(num_tests):
        h, n, c = combos[i % len(combos)]
        text = user_prompt(h, n, c)
        out.append(PromptSpec(id=f"t{i:04d}", hamiltonian=h, num_qubits=n, constraint=c,
                              prompt=text, messages=chat_messages(text)))
    return out
