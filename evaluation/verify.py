"""Circuit discovery in an executed reply's namespace, and the verification rules (docs/evaluation.md)."""

from __future__ import annotations

import inspect
import math
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from qiskit.circuit import ParameterExpression, QuantumCircuit
from qiskit.exceptions import QiskitError

from evaluation.defaults import MAX_DEPTH

PREFERRED_NAMES = ("qc", "circuit", "ansatz")
QUBIT_ARG_NAMES = ("n", "num_qubits", "n_qubits", "nqubits", "qubits", "num_qubit", "n_qubit", "nq")
_IGNORED = {"barrier", "delay"}
_DECOMPOSE_ROUNDS = 20
MAX_FLAT_INSTRUCTIONS = 20_000  # a depth-50 circuit on 16 qubits has at most 800 gates
_PROBE_VALUE = 0.6180339887  # symbolic angles are evaluated here to catch nan*t, inf*t
CALL_KEYWORDS = ("circuit", "ansatz", "create", "build", "make", "generate", "construct")
MINIMAL_DEPTH_LIMIT = 25  # "Minimize circuit depth": half the verification limit
NOT_FOUND = "no QuantumCircuit found"
SEARCH_RAISED = "; the last call "
MAX_HELD = 64  # the items of one list/dict, or the attributes of one object, looked at  # find_circuit: NOT_FOUND + SEARCH_RAISED + "f() raised Type: message"


def _is_copy(circuit: QuantumCircuit) -> bool:
    """A transpiled copy (it carries a layout): the device-sized version of a circuit the reply built."""
    return getattr(circuit, "layout", None) is not None


def _variable_rank(name: str, circuit: QuantumCircuit, order: int) -> tuple:
    """Sort key, best first: free parameters, not a transpiled copy, the names qc/circuit/ansatz in
    that order, then the later definition."""
    name = _rank_name(name)
    named = PREFERRED_NAMES.index(name) if name in PREFERRED_NAMES else len(PREFERRED_NAMES)
    return (circuit.num_parameters == 0, _is_copy(circuit), named, -order)


def _is_reply_object(value: Any, module: str | None) -> bool:
    """An instance of a class the reply defined (not a class, not a function, not a qiskit object)."""
    return (module is not None and not isinstance(value, type) and not callable(value)
            and getattr(type(value), "__module__", None) == module and hasattr(value, "__dict__"))


def _in_container(name: str, value: Any) -> list[tuple[str, QuantumCircuit]]:
    """The circuits directly inside a list, tuple or dict: (name[i] or name['key'], circuit)."""
    if isinstance(value, (list, tuple)):
        return [(f"{name}[{i}]", v) for i, v in enumerate(value[:MAX_HELD]) if isinstance(v, QuantumCircuit)]
    if isinstance(value, dict):
        return [(f"{name}[{k!r}]"[:80], v) for k, v in list(value.items())[:MAX_HELD]
                if isinstance(v, QuantumCircuit)]
    return []


def held_circuits(name: str, value: Any, module: str | None) -> list[tuple[str, QuantumCircuit]]:
    """The circuits a value the reply left holds, each with the name it is reached by: the value itself
    (`qc`), the circuits in a list/tuple/dict (`circuits[2]`), and the circuits an instance of the reply's
    own class keeps in its attributes, directly or in a list/tuple/dict there (`vqc.circuit`). Attributes
    are read from the instance's __dict__ (no property or __getattr__ of the reply runs)."""
    if isinstance(value, QuantumCircuit):
        return [(name, value)]
    out = _in_container(name, value)
    if not out and _is_reply_object(value, module):
        attrs = value.__dict__
        if isinstance(attrs, dict):
            for attr, v in list(attrs.items())[:MAX_HELD]:
                if not isinstance(attr, str) or attr.startswith("__"):
                    continue
                if isinstance(v, QuantumCircuit):
                    out.append((f"{name}.{attr}", v))
                else:
                    out.extend(_in_container(f"{name}.{attr}", v))
    return out


def _rank_name(name: str) -> str:
    """The name the preference rules read: an attribute's or item's holder (`vqc.circuit` -> circuit,
    `circuits[2]` -> circuits)."""
    return name.split("[", 1)[0].rsplit(".", 1)[-1]


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
          captured: list[tuple[str, QuantumCircuit, str]], raised: list[str]) -> QuantumCircuit | None:
    """Call one of the reply's functions; its return value if that is a circuit (or a tuple starting with
    one). Circuits left in the local variables of the reply's own frames (a `main()` that builds and
    prints) are appended to `captured` as (variable, circuit, function name); what the call raised, as
    "f() raised Type: message", to `raised` (reported when nothing is found)."""

    module = namespace.get("__name__")

    def local_tracer(frame, event, arg):  # noqa: ARG001
        if event == "return":
            captured.extend((k, v, frame.f_code.co_name) for name, value in list(frame.f_locals.items())
                            for k, v in held_circuits(name, value, module))
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
    except SystemExit:  # a main() ending in sys.exit()/exit(): what the tracer captured stands
        return None
    except Exception as exc:  # noqa: BLE001  (the reply's own error: reported if nothing is found)
        raised.append(f"{fn.__name__}() raised {type(exc).__name__}: {exc}")
        return None
    finally:
        sys.settrace(previous)
    if isinstance(out, tuple) and out and isinstance(out[0], QuantumCircuit):
        out = out[0]
    return out if isinstance(out, QuantumCircuit) else None


def find_circuit(namespace: dict[str, Any], expected_qubits: int) -> tuple[QuantumCircuit | None, str]:
    """The circuit the reply built (docs/evaluation.md, "Circuit choice"). First match wins:
    1. a module-level QuantumCircuit with free parameters (several: not a transpiled copy, then the
       names qc, circuit, ansatz in that order, then the last defined); module-level means a variable,
       an item of a list/tuple/dict variable, or an attribute of an instance of the reply's own class
       (`vqc.circuit`, ranked by the attribute's name; see held_circuits);
    2. a circuit with free parameters returned by one of the reply's own functions: zero-argument ones
       first, then one-argument ones whose parameter is named like a qubit count (called with the
       prompt's count), names containing circuit/ansatz/create/build/... first, then definition order;
    3. a circuit with free parameters left in a local variable of those calls (e.g. built in `main()`;
       held as in 1 too: `model.ansatz`), ranked as in 1; a call that ends in sys.exit()/exit() keeps
       what its frames left;
    4. without free parameters anywhere, the same three steps for circuits without parameters (so a
       bound copy or numeric angles are found, and fail verification as `no_parameters`).
    Returns (circuit, how it was found): "variable NAME", "call NAME()" or "local NAME in FUNC()"."""
    module = namespace.get("__name__")
    held = [(k, v) for name, value in list(namespace.items()) if not name.startswith("__")
            for k, v in held_circuits(name, value, module)]
    variables = [(k, v, i) for i, (k, v) in enumerate(held)]
    variables.sort(key=lambda kvi: _variable_rank(*kvi))
    if variables and variables[0][1].num_parameters > 0:
        return variables[0][1], f"variable {variables[0][0]}"
    unbound_call = None
    captured: list[tuple[str, QuantumCircuit, str]] = []
    raised: list[str] = []
    for name, fn, arity in _call_candidates(namespace):
        out = _call(fn, arity, expected_qubits, namespace, captured, raised)
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
    return None, (NOT_FOUND + (SEARCH_RAISED + raised[-1] if raised else ""))[:300]


class InvalidCircuit(ValueError):
    """The circuit holds an operation the judge cannot take at its word (docs/evaluation.md)."""


@lru_cache(maxsize=1)
def _genuine_classes() -> dict[str, frozenset[type]]:
    """name -> the classes a genuine instruction of that name has (qiskit's standard gates and the
    barrier/delay/measure/reset directives): the class and, for singletons, its singleton subclass,
    both taken from qiskit's own instances, never from the instruction under test."""
    from qiskit.circuit import Barrier
    from qiskit.circuit.library import get_standard_gate_name_mapping

    out = {name: frozenset({type(op), op.base_class}) for name, op in get_standard_gate_name_mapping().items()}
    out["barrier"] = frozenset({Barrier})
    return out


def is_genuine(op) -> bool:
    """True iff `op` is exactly the standard class its name claims (a renamed custom gate is not)."""
    classes = _genuine_classes().get(getattr(op, "name", None))
    return classes is not None and type(op) in classes


def _expand(op) -> QuantumCircuit:
    """One level of `op`'s decomposition; InvalidCircuit when it has none."""
    from qiskit.circuit import AnnotatedOperation, ControlFlowOp

    if isinstance(op, ControlFlowOp):
        raise InvalidCircuit(f"control-flow instruction {str(op.name)[:40]!r} is not accepted")
    if isinstance(op, AnnotatedOperation):  # no definition: qiskit's own synthesis gives one level
        one = QuantumCircuit(op.num_qubits, op.num_clbits)
        one.append(op, one.qubits, one.clbits)
        definition = one.decompose()
    else:
        definition = getattr(op, "definition", None)
    if definition is None:
        raise InvalidCircuit(f"instruction {str(op.name)[:40]!r} is not a standard gate and has no definition")
    return definition


def flatten(circuit: QuantumCircuit) -> QuantumCircuit:
    """Every instruction that is not genuinely a standard gate or directive (by class, not by name)
    replaced by its definition, at most _DECOMPOSE_ROUNDS levels deep; then final measurements (and
    the barriers just before them) removed. InvalidCircuit if anything non-standard remains, or if
    the result exceeds MAX_FLAT_INSTRUCTIONS. (Decomposing first: qiskit removes final measurements
    by name, so a renamed gate must not be taken for one.)"""
    qc = circuit
    for _ in range(_DECOMPOSE_ROUNDS):
        if all(is_genuine(inst.operation) for inst in qc.data):
            break
        out = qc.copy_empty_like()
        for inst in qc.data:
            if is_genuine(inst.operation):
                out._append(inst)
            else:
                out.compose(_expand(inst.operation), qubits=inst.qubits, clbits=inst.clbits, inplace=True)
            if len(out.data) > MAX_FLAT_INSTRUCTIONS:
                raise InvalidCircuit(f"more than {MAX_FLAT_INSTRUCTIONS} instructions after decomposition")
        qc = out
    else:
        if not all(is_genuine(inst.operation) for inst in qc.data):
            raise InvalidCircuit(f"gate definitions nested more than {_DECOMPOSE_ROUNDS} levels")
    if any(inst.operation.name == "measure" for inst in qc.data):  # every op is genuine by now
        return qc.remove_final_measurements(inplace=False)
    return qc  # the copy costs ~15 ms a circuit; callers never modify the result


def _finite_real(value) -> bool:
    try:
        c = complex(value)
    except (TypeError, ValueError):
        return False
    return math.isfinite(c.real) and c.imag == 0


def check_angles(flat: QuantumCircuit) -> None:
    """InvalidCircuit unless every numeric gate parameter (and the global phase) is a finite real
    number, and every symbolic one evaluates to one at a probe point."""
    for where, value in [("global phase", flat.global_phase)] + \
            [(str(inst.operation.name), p) for inst in flat.data for p in inst.operation.params]:
        if isinstance(value, ParameterExpression) and value.parameters:
            try:
                value = value.bind({q: _PROBE_VALUE for q in value.parameters})
            except Exception as exc:  # noqa: BLE001  (e.g. division by zero at the probe point)
                raise InvalidCircuit(f"angle {str(value)[:40]} cannot be evaluated: {type(exc).__name__}") from None
        if isinstance(value, str):  # a delay's unit
            continue
        if not _finite_real(value):
            raise InvalidCircuit(f"non-finite or complex angle in {where[:40]!r}: {str(value)[:40]}")


def angle_parameters(flat: QuantumCircuit) -> set:
    """The free Parameters some gate's angle depends on (not the global phase, not a delay's duration,
    not a global_phase gate)."""
    out: set = set()
    for inst in flat.data:
        if inst.operation.name in _IGNORED | {"global_phase"}:
            continue
        for p in inst.operation.params:
            if isinstance(p, ParameterExpression):
                out |= set(p.parameters)
    return out


def circuit_depth(flat: QuantumCircuit) -> int:
    """Depth without barriers and delays (a flattened circuit: those names are the genuine classes)."""
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


# Verification-level failure kinds (evaluation.failures.FAILURES), in the order they are tried.
VERIFICATION_FAILURES = ("wrong_qubits", "invalid_circuit", "too_deep", "no_parameters")


@dataclass
class Verification:
    verification_pass: bool
    num_qubits_found: int | None
    depth: int | None
    num_parameters: int | None
    gate_counts: dict[str, int] = field(default_factory=dict)
    constraint_satisfied: bool | None = None
    error: str | None = None
    failure: str | None = None  # the first of VERIFICATION_FAILURES that applies; None iff it passed


def verify_circuit(circuit: QuantumCircuit, expected_qubits: int, constraint: str = "",
                   max_depth: int = MAX_DEPTH) -> tuple[Verification, QuantumCircuit | None]:
    """The verification rules (docs/evaluation.md). Returns the flattened circuit too (None when the
    circuit is invalid: nothing may be simulated then)."""
    problems: dict[str, str] = {}
    if circuit.num_qubits != expected_qubits:
        problems["wrong_qubits"] = f"{circuit.num_qubits} qubits, expected {expected_qubits}"
    try:
        flat = flatten(circuit)
        check_angles(flat)
    except (InvalidCircuit, QiskitError) as exc:  # qiskit's own rejection of the reply's circuit counts too
        problems["invalid_circuit"] = f"invalid circuit: {exc}"[:300]
        failure = next(k for k in VERIFICATION_FAILURES if k in problems)
        return Verification(verification_pass=False, num_qubits_found=circuit.num_qubits, depth=None,
                            num_parameters=None, error="; ".join(problems.values()), failure=failure), None
    depth = circuit_depth(flat)
    nparams = len(angle_parameters(flat))
    if depth > max_depth:
        problems["too_deep"] = f"depth {depth} > {max_depth}"
    if nparams < 1:
        problems["no_parameters"] = "no free parameters in any gate angle (not variational)"
    counts = gate_counts(flat)
    failure = next((k for k in VERIFICATION_FAILURES if k in problems), None)
    v = Verification(verification_pass=failure is None, num_qubits_found=circuit.num_qubits, depth=depth,
                     num_parameters=nparams, gate_counts=counts,
                     constraint_satisfied=constraint_satisfied(constraint, flat, depth, counts),
                     error="; ".join(problems[k] for k in VERIFICATION_FAILURES if k in problems) or None,
                     failure=failure)
    return v, flat
