"""Circuit discovery in an executed reply's namespace, and the verification rules (docs/evaluation.md)."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from qiskit.circuit import QuantumCircuit

from evaluation.defaults import MAX_DEPTH

PREFERRED_NAMES = ("qc", "circuit", "ansatz")
QUBIT_ARG_NAMES = ("n", "num_qubits", "n_qubits", "nqubits", "qubits", "num_qubit", "n_qubit", "nq")
_IGNORED = {"barrier", "delay"}
_DECOMPOSE_ROUNDS = 20
MINIMAL_DEPTH_LIMIT = 25  # "Minimize circuit depth": half the verification limit


def find_circuit(namespace: dict[str, Any], expected_qubits: int) -> tuple[QuantumCircuit | None, str]:
    """Rule: module-level `qc`, `circuit`, `ansatz` (in that order); else the last module-level
    QuantumCircuit defined; else call the reply's own functions: zero-argument ones first, then
    one-argument ones whose parameter is named like a qubit count (given the prompt's count), in
    definition order, preferring names containing circuit/ansatz/create/build; first that returns a
    QuantumCircuit wins. Returns (circuit, how it was found)."""
    for name in PREFERRED_NAMES:
        if isinstance(namespace.get(name), QuantumCircuit):
            return namespace[name], f"variable {name}"
    circuits = [(k, v) for k, v in namespace.items() if isinstance(v, QuantumCircuit) and not k.startswith("__")]
    if circuits:
        return circuits[-1][1], f"variable {circuits[-1][0]}"
    funcs = [(k, v) for k, v in namespace.items()
             if inspect.isfunction(v) and getattr(v, "__module__", None) == namespace.get("__name__")]
    keywords = ("circuit", "ansatz", "create", "build", "make", "generate", "construct")
    funcs.sort(key=lambda kv: not any(w in kv[0].lower() for w in keywords))
    for args_wanted in (0, 1):
        for name, fn in funcs:
            try:
                sig = inspect.signature(fn)
            except (TypeError, ValueError):
                continue
            required = [p for p in sig.parameters.values()
                        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            if len(required) != args_wanted:
                continue
            if args_wanted == 1 and required[0].name.lower() not in QUBIT_ARG_NAMES:
                continue
            try:
                out = fn() if args_wanted == 0 else fn(expected_qubits)
            except Exception:
                continue
            if isinstance(out, tuple) and out and isinstance(out[0], QuantumCircuit):
                out = out[0]
            if isinstance(out, QuantumCircuit):
                return out, f"call {name}()"
    return None, "no QuantumCircuit found"


@lru_cache(maxsize=1)
def _standard_names() -> frozenset[str]:
    from qiskit.circuit.library import get_standard_gate_name_mapping

    return frozenset(get_standard_gate_name_mapping()) | {"barrier", "measure", "reset", "delay"}


def flatten(circuit: QuantumCircuit) -> QuantumCircuit:
    """Final measurements (and the barriers before them) removed, library/custom blocks decomposed
    until only standard gates remain."""
    qc = circuit
    if any(inst.operation.name == "measure" for inst in circuit.data):  # the copy costs ~15 ms a circuit
        qc = circuit.remove_final_measurements(inplace=False)
    std = _standard_names()
    for _ in range(_DECOMPOSE_ROUNDS):
        names = {inst.operation.name for inst in qc.data if inst.operation.name not in std}
        if not names:
            break
        qc = qc.decompose(gates_to_decompose=list(names))
    return qc


def circuit_depth(flat: QuantumCircuit) -> int:
    return flat.depth(filter_function=lambda inst: inst.operation.name not in _IGNORED)


def gate_counts(flat: QuantumCircuit) -> dict[str, int]:
    return {k: int(v) for k, v in sorted(flat.count_ops().items()) if k not in _IGNORED}


def _two_qubit_pairs(flat: QuantumCircuit) -> list[tuple[int, ...]]:
    return [tuple(flat.find_bit(q).index for q in inst.qubits) for inst in flat.data
            if len(inst.qubits) >= 2 and inst.operation.name not in _IGNORED | {"measure"}]


def _connected(n: int, pairs: list[tuple[int, ...]]) -> bool:
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for p in pairs:
        for q in p[1:]:
            parent[root(p[0])] = root(q)
    return len({root(i) for i in range(n)}) == 1


def constraint_satisfied(constraint: str, flat: QuantumCircuit, depth: int,
                         counts: dict[str, int] | None = None) -> bool | None:
    """One documented, checkable reading of each seed constraint; None when there is none.
    `counts`: gate_counts(flat), when the caller has it already."""
    c = constraint.strip().lower()
    if not c:
        return None
    if counts is None:
        counts = gate_counts(flat)
    ops = set(counts) - {"measure"}
    pairs = _two_qubit_pairs(flat)
    if c.startswith("use only ry and cx"):
        return ops <= {"ry", "cx"}
    if c.startswith("minimize circuit depth"):
        return depth <= MINIMAL_DEPTH_LIMIT
    if c.startswith("use a hardware-efficient"):
        return all(len(p) == 2 and abs(p[0] - p[1]) == 1 for p in pairs) and \
            all(len(inst.qubits) <= 2 for inst in flat.data)
    if c.startswith("include entangling"):
        return bool(pairs) and _connected(flat.num_qubits, pairs)
    return None


@dataclass
class Verification:
    verification_pass: bool
    num_qubits_found: int | None
    depth: int | None
    num_parameters: int | None
    gate_counts: dict[str, int] = field(default_factory=dict)
    constraint_satisfied: bool | None = None
    error: str | None = None


def verify_circuit(circuit: QuantumCircuit, expected_qubits: int, constraint: str = "",
                   max_depth: int = MAX_DEPTH) -> tuple[Verification, QuantumCircuit]:
    flat = flatten(circuit)
    depth = circuit_depth(flat)
    nparams = circuit.num_parameters
    problems = []
    if circuit.num_qubits != expected_qubits:
        problems.append(f"{circuit.num_qubits} qubits, expected {expected_qubits}")
    if depth > max_depth:
        problems.append(f"depth {depth} > {max_depth}")
    if nparams < 1:
        problems.append("no free parameters (not variational)")
    counts = gate_counts(flat)
    v = Verification(verification_pass=not problems, num_qubits_found=circuit.num_qubits, depth=depth,
                     num_parameters=nparams, gate_counts=counts,
                     constraint_satisfied=constraint_satisfied(constraint, flat, depth, counts),
                     error="; ".join(problems) or None)
    return v, flat
