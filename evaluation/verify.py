"""Circuit discovery in an executed reply's namespace, and the verification rules (docs/evaluation.md)."""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from qiskit.circuit import QuantumCircuit

from evaluation.defaults import MAX_DEPTH

PREFERRED_NAMES = ("qc", "circuit", "ansatz")
QUBIT_ARG_NAMES = ("n", "num_qubits", "n_qubits", "nqubits", "qubits", "num_qubit", "n_qubit", "nq")
_IGNORED = {"barrier", "delay"}
_DECOMPOSE_ROUNDS = 20
CALL_KEYWORDS = ("circuit", "ansatz", "create", "build", "make", "generate", "construct")
MINIMAL_DEPTH_LIMIT = 25  # "Minimize circuit depth": half the verification limit


def _is_copy(circuit: QuantumCircuit) -> bool:
    """A transpiled copy (it carries a layout): the device-sized version of a circuit the reply built."""
    return getattr(circuit, "layout", None) is not None


def _variable_rank(name: str, circuit: QuantumCircuit, order: int) -> tuple:
    """Sort key, best first: free parameters, not a transpiled copy, the names qc/circuit/ansatz in
    that order, then the later definition."""
    named = PREFERRED_NAMES.index(name) if name in PREFERRED_NAMES else len(PREFERRED_NAMES)
    return (circuit.num_parameters == 0, _is_copy(circuit), named, -order)


def _call_candidates(namespace: dict[str, Any]) -> list[tuple[str, Any, int]]:
    """The reply's own functions worth calling, in the order they are tried: (name, function, arity)."""
    funcs = [(k, v) for k, v in namespace.items()
             if inspect.isfunction(v) and getattr(v, "__module__", None) == namespace.get("__name__")]
    funcs.sort(key=lambda kv: not any(w in kv[0].lower() for w in CALL_KEYWORDS))
    out = []
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
            out.append((name, fn, args_wanted))
    return out


def _call(fn: Any, arity: int, expected_qubits: int, namespace: dict[str, Any],
          captured: list[tuple[str, QuantumCircuit, str]]) -> QuantumCircuit | None:
    """Call one of the reply's functions; its return value if that is a circuit (or a tuple starting with
    one). Circuits left in the local variables of the reply's own frames (a `main()` that builds and
    prints) are appended to `captured` as (variable, circuit, function name)."""

    def local_tracer(frame, event, arg):  # noqa: ARG001
        if event == "return":
            captured.extend((k, v, frame.f_code.co_name) for k, v in frame.f_locals.items()
                            if isinstance(v, QuantumCircuit))
        return local_tracer

    def tracer(frame, event, arg):  # noqa: ARG001 - only the reply's frames are traced, never qiskit's
        if frame.f_globals is not namespace:
            return None
        frame.f_trace_lines = False
        return local_tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        out = fn() if arity == 0 else fn(expected_qubits)
    except Exception:
        return None
    finally:
        sys.settrace(previous)
    if isinstance(out, tuple) and out and isinstance(out[0], QuantumCircuit):
        out = out[0]
    return out if isinstance(out, QuantumCircuit) else None


def find_circuit(namespace: dict[str, Any], expected_qubits: int) -> tuple[QuantumCircuit | None, str]:
    """The circuit the reply built (docs/evaluation.md, "Circuit choice"). First match wins:
    1. a module-level QuantumCircuit with free parameters (several: not a transpiled copy, then the
       names qc, circuit, ansatz in that order, then the last defined);
    2. a circuit with free parameters returned by one of the reply's own functions: zero-argument ones
       first, then one-argument ones whose parameter is named like a qubit count (called with the
       prompt's count), names containing circuit/ansatz/create/build/... first, then definition order;
    3. a circuit with free parameters left in a local variable of those calls (e.g. built in `main()`),
       ranked as in 1;
    4. without free parameters anywhere, the same three steps for circuits without parameters (so a
       bound copy or numeric angles are found, and fail verification as `no_parameters`).
    Returns (circuit, how it was found): "variable NAME", "call NAME()" or "local NAME in FUNC()"."""
    variables = [(k, v, i) for i, (k, v) in enumerate(namespace.items())
                 if isinstance(v, QuantumCircuit) and not k.startswith("__")]
    variables.sort(key=lambda kvi: _variable_rank(*kvi))
    if variables and variables[0][1].num_parameters > 0:
        return variables[0][1], f"variable {variables[0][0]}"
    unbound_call = None
    captured: list[tuple[str, QuantumCircuit, str]] = []
    for name, fn, arity in _call_candidates(namespace):
        out = _call(fn, arity, expected_qubits, namespace, captured)
        if out is None:
            continue
        if out.num_parameters > 0:
            return out, f"call {name}()"
        unbound_call = unbound_call or (out, f"call {name}()")
    locals_ = sorted(((k, v, i, fn) for i, (k, v, fn) in enumerate(captured)),
                     key=lambda c: _variable_rank(c[0], c[1], c[2]))
    if locals_ and locals_[0][1].num_parameters > 0:
        return locals_[0][1], f"local {locals_[0][0]} in {locals_[0][3]}()"
    if variables:
        return variables[0][1], f"variable {variables[0][0]}"
    if unbound_call is not None:
        return unbound_call
    if locals_:
        return locals_[0][1], f"local {locals_[0][0]} in {locals_[0][3]}()"
    return None, "no QuantumCircuit found"


@lru_cache(maxsize=1)
def _standard_names() -> frozenset[str]:
    from qiskit.circuit.library import get_standard_gate_name_mapping

    return frozenset(get_standard_gate_name_mapping()) | {"barrier", "measure", "reset", "delay"}


def flatten(circuit: QuantumCircuit) -> QuantumCircuit:
    """Final measurements (and the barriers before them) removed, library/custom blocks decomposed
    until only standard gates remain."""
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
