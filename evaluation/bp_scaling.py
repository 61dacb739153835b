"""The reply's ansatz at larger sizes, for the barren-plateau verdict (docs/evaluation.md).

In G (the reply process, hostile side), `rebuild_scaled` builds the same ansatz at the larger sizes of
`scaled_sizes` (2 -> 4, 6, 8; 4 -> 6, 8; 6 -> 8; 8 -> 10; capped at BP_SCALING_MAX_QUBITS) where the reply allows it, in one of three ways:

- `call NAME()` with one required argument (find_circuit called the reply's function with n): call
  it again with the larger count;
- module-level code driven by an integer variable named like a qubit count (`n = 4`,
  `num_qubits: int = 6`, ... equal to the prompt's count, outside function bodies): re-execute the
  code in a fresh namespace with that literal replaced (AST rewrite) and find the circuit the same
  way (same `found_by`);
- `variable X` where X is assigned at module level from a call whose qubit-count argument is that
  literal (`qc = efficient_su2(4, reps=2)`, `circuit = create_ansatz(num_qubits=4)`; not the
  QuantumCircuit constructor, whose gates come from later lines): the same re-execution with that
  argument replaced.

The rebuilds count against the reply's own timeout (job["timeout_s"]): all of them share
BP_SCALING_TIME_S of wall clock, less if the reply's run left less than that plus BP_SCALING_MARGIN_S
before its timeout (an alarm aborts the one running); none starts once the reply's run used
BP_SCALING_SKIP_AFTER_S of CPU; their output goes to /dev/null. The circuits travel as QPY in header["qpy_scaled"]
({str(num_qubits): base64}); in I, `judge_bp` verifies each like the prompt's circuit (same checks
at its own size, and every qubit acted on), measures its variance, and returns the verdict's fields.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import inspect
import io
import math
import os
import signal
import time
from typing import Any

from evaluation.defaults import (BP_NUM_SAMPLES, BP_RATIO_MIN_QUBITS, BP_RULE, BP_SCALING_MARGIN_S,
                                 BP_SCALING_MAX_QUBITS, BP_SCALING_SKIP_AFTER_S, BP_SCALING_STEPS,
                                 BP_SCALING_TIME_S, BP_VARIANCE_THRESHOLD, MAX_DEPTH)

QUBIT_VAR_NAMES = frozenset({"n", "num_qubits", "n_qubits", "nqubits", "qubits", "num_qubit", "n_qubit", "nq",
                             "n_q", "number_of_qubits", "num_spins", "n_spins", "num_sites", "n_sites",
                             "nsites"})
_CONSTRUCTORS = frozenset({"QuantumCircuit"})


class _OutOfTime(BaseException):
    """Raised by the alarm inside a rebuild that ran past its budget."""


def scaled_sizes(n: int) -> list[int]:
    """n+2, n+4 and, below it, BP_RATIO_MIN_QUBITS (8, so that every fit reaches the size where a
    2-design's variance is small); above 8 only the first step (a check costs ~4x more per 2 qubits),
    and never above BP_SCALING_MAX_QUBITS. 4 -> 6, 8; 6 -> 8; 8 -> 10."""
    sizes = {n + k for k in BP_SCALING_STEPS} | ({BP_RATIO_MIN_QUBITS} if n < BP_RATIO_MIN_QUBITS else set())
    top = min(BP_SCALING_MAX_QUBITS, max(BP_RATIO_MIN_QUBITS, n + BP_SCALING_STEPS[0]))
    return sorted(m for m in sizes if n < m <= top)


def preload() -> None:
    """In the fork server: the Hamiltonians' matrices and references at the sizes rebuilt from the
    seed's, so that no judge builds them."""
    from evaluation.barren import haar_gradient_variance
    from evaluation.hamiltonians import sparse_matrix
    from evaluation.prompts import HAMILTONIANS, QUBIT_COUNTS

    for key in HAMILTONIANS:
        for n in QUBIT_COUNTS:
            for m in [n] + scaled_sizes(n):
                sparse_matrix(key, m)
                haar_gradient_variance(key, m)


# ------------------------------------------------------------------------------ the AST rewrite

def _is_count(node: ast.AST, n: int) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int and node.value == n


def _module_statements(tree: ast.Module):
    """Statements executed at module level (descending into if/for/while/with/try, not into defs)."""
    stack = list(reversed(tree.body))
    while stack:
        st = stack.pop()
        yield st
        if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        for name in ("body", "orelse", "finalbody"):
            stack.extend(reversed(getattr(st, name, []) or []))
        for h in getattr(st, "handlers", []) or []:
            stack.extend(reversed(h.body))


def _callee_name(call: ast.Call) -> str:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def driving_literals(tree: ast.Module, n: int, found_by: str) -> tuple[list[ast.Constant], str] | None:
    """The integer literals (nodes of `tree`) equal to n that drive the circuit, and how: the values of
    module-level assignments to a qubit-count variable, else the qubit-count argument of the call
    assigned to the found variable. None when there is none."""
    hits: list[ast.Constant] = []
    names: set[str] = set()
    for st in _module_statements(tree):
        if isinstance(st, ast.Assign) and _is_count(st.value, n):
            targets = [t.id for t in st.targets if isinstance(t, ast.Name)]
            if targets and len(targets) == len(st.targets) and all(t.lower() in QUBIT_VAR_NAMES for t in targets):
                hits.append(st.value)
                names.update(targets)
        elif isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name) and st.value is not None \
                and _is_count(st.value, n) and st.target.id.lower() in QUBIT_VAR_NAMES:
            hits.append(st.value)
            names.add(st.target.id)
    if hits:
        return hits, "variable " + ", ".join(sorted(names))
    if not found_by.startswith("variable "):
        return None
    var = found_by[len("variable "):].split(".", 1)[0].split("[", 1)[0]  # `vqc.circuit`: vqc = Ansatz(8)
    for st in _module_statements(tree):
        if not (isinstance(st, ast.Assign) and isinstance(st.value, ast.Call)
                and any(isinstance(t, ast.Name) and t.id == var for t in st.targets)):
            continue
        call = st.value
        if _callee_name(call) in _CONSTRUCTORS:
            continue
        args = [a for a in call.args[:1] if _is_count(a, n)]
        args += [k.value for k in call.keywords if k.arg and k.arg.lower() in QUBIT_VAR_NAMES and _is_count(k.value, n)]
        if args:
            hits.extend(args)
            names.add(f"{_callee_name(call)}()")
    if hits:
        return hits, "argument of " + ", ".join(sorted(names))
    return None


def rewritten(code: str, n: int, m: int, found_by: str) -> tuple[Any, str] | None:
    """The reply's code compiled with the driving literal(s) n replaced by m, and how; None if none."""
    tree = ast.parse(code)
    found = driving_literals(tree, n, found_by)
    if found is None:
        return None
    nodes, how = found
    for node in nodes:
        node.value = m
    return compile(tree, "reply.py", "exec", dont_inherit=True), how


# ------------------------------------------------------------------------------ in G

def _age_s() -> float:
    """Seconds since this process started (/proc/self/stat), else its CPU time."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return time.clock_gettime(time.CLOCK_BOOTTIME) - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.process_time()


def _one_arg_function(fn) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    required = [p for p in sig.parameters.values()
                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(required) == 1


@contextlib.contextmanager
def _time_box(seconds: float):
    def _alarm(signum, frame):  # noqa: ARG001
        raise _OutOfTime()

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _build(namespace: dict, code: str, n: int, m: int, found_by: str):
    """The circuit at m qubits and how it was rebuilt, or (None, why not)."""
    from qiskit.circuit import QuantumCircuit

    from evaluation.verify import find_circuit

    if found_by.startswith("call ") and found_by.endswith("()"):
        fn = namespace.get(found_by[5:-2])
        if callable(fn) and _one_arg_function(fn):
            out = fn(m)
            if isinstance(out, tuple) and out and isinstance(out[0], QuantumCircuit):
                out = out[0]
            return (out, found_by) if isinstance(out, QuantumCircuit) else (None, f"{found_by} at {m}: no circuit")
    rw = rewritten(code, n, m, found_by)
    if rw is None:
        return None, "no qubit-count variable or argument"
    compiled, how = rw
    ns: dict[str, Any] = {"__name__": "__main__", "__file__": namespace.get("__file__", "reply.py")}
    try:
        exec(compiled, ns)
    except SystemExit:
        pass
    circuit, how_found = find_circuit(ns, m)
    if circuit is None or how_found != found_by:
        return None, f"{how} = {m}: circuit not found as {found_by}"
    return circuit, how


def rebuild_scaled(namespace: dict, job: dict, header: dict) -> None:
    """In G, after the prompt's circuit was found (header["found_by"]): header["qpy_scaled"],
    header["scaled_by"] and, when a size failed, header["scaling_note"]. Never raises."""
    from qiskit import qpy

    n = int(job["num_qubits"])
    found_by = str(header.get("found_by") or "")
    sizes = scaled_sizes(n)
    if not sizes or not found_by:
        return
    age = _age_s()
    budget = min(BP_SCALING_TIME_S, float(job.get("timeout_s") or 20.0) - age - BP_SCALING_MARGIN_S)
    if budget < 0.5 or time.process_time() > BP_SCALING_SKIP_AFTER_S:
        header["scaling_note"] = f"not rebuilt: the reply's run already took {age:.1f} s"
        return
    deadline = time.monotonic() + budget
    out: dict[str, str] = {}
    errors: list[str] = []
    how = None
    with open(os.devnull, "w") as sink:
        for m in sizes:
            left = deadline - time.monotonic()
            if left <= 0:
                errors.append(f"{m} qubits: out of time")
                break
            try:
                with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), _time_box(left):
                    circuit, how_m = _build(namespace, str(job.get("code") or ""), n, m, found_by)
                if circuit is None:
                    errors.append(how_m)
                    if "no qubit-count" in how_m:
                        break
                    continue
                buf = io.BytesIO()
                qpy.dump(circuit, buf)
                out[str(m)] = base64.b64encode(buf.getvalue()).decode()
                how = how_m
            except _OutOfTime:
                errors.append(f"{m} qubits: rebuild ran past {BP_SCALING_TIME_S:g} s")
                break
            except BaseException as exc:  # noqa: BLE001 - the reply's code, rebuilt: its own failure
                from evaluation.sandbox.kinds import short_exc

                errors.append(f"{m} qubits: {short_exc(exc)}"[:200])
    if out:
        header["qpy_scaled"] = out
        header["scaled_by"] = how
    if errors:
        header["scaling_note"] = "; ".join(errors)[:300]


# ------------------------------------------------------------------------------ in I

def _all_qubits_used(flat) -> bool:
    used = {flat.find_bit(q).index for inst in flat.data if inst.operation.name not in ("barrier", "delay")
            for q in inst.qubits}
    return len(used) == flat.num_qubits


def _scaled_variances(job: dict, cfg: dict, header: dict) -> tuple[dict[int, float], list[str]]:
    from qiskit import qpy

    from evaluation import barren, simulator
    from evaluation.hamiltonians import sparse_matrix
    from evaluation.sandbox.kinds import short_exc
    from evaluation.verify import verify_circuit

    n = int(job["num_qubits"])
    allowed = set(scaled_sizes(n))
    payload = header.get("qpy_scaled")
    variances: dict[int, float] = {}
    errors: list[str] = []
    if not isinstance(payload, dict):
        return variances, errors
    for key, data in payload.items():
        try:
            m = int(key)
            if m not in allowed or not isinstance(data, str):
                raise ValueError(f"unexpected size {key!r}")
            circuit = qpy.load(io.BytesIO(base64.b64decode(data, validate=True)))[0]
            ver, flat = verify_circuit(circuit, m, job.get("constraint") or "", cfg.get("max_depth", MAX_DEPTH))
            if not ver.verification_pass:
                raise ValueError(str(ver.error))
            if not _all_qubits_used(flat):
                raise ValueError("some qubits carry no gate")
            bp = barren.detect_barren_plateau(simulator.compile_circuit(flat), sparse_matrix(job["hamiltonian"], m),
                                              num_samples=cfg.get("bp_samples", BP_NUM_SAMPLES),
                                              seed=cfg.get("seed", 0))
            if not math.isfinite(bp.bp_variance):
                raise ValueError("non-finite gradient variance")
            variances[m] = bp.bp_variance
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{key} qubits: {short_exc(exc)}"[:200])
    return variances, errors


def judge_bp(job: dict, cfg: dict, header: dict, variance: float) -> dict[str, Any]:
    """In I: the verdict's result fields, from the prompt's circuit's bp_variance and the rebuilt
    circuits in the header (measured only under rule `scaling`)."""
    from evaluation.barren import bp_verdict

    rule = job.get("bp_rule") or cfg.get("bp_rule", BP_RULE)
    scaled, errors = _scaled_variances(job, cfg, header) if rule == "scaling" else ({}, [])
    v = bp_verdict(job["hamiltonian"], int(job["num_qubits"]), variance, scaled, rule=rule,
                   threshold=cfg.get("bp_threshold", BP_VARIANCE_THRESHOLD))
    out: dict[str, Any] = {"bp_free": v.bp_free, "bp_rule": v.rule, "bp_basis": v.basis, "bp_ratio": v.ratio,
                           "bp_reference": v.reference, "bp_scaling": v.scaling, "bp_decay": v.decay,
                           "bp_decay_reference": v.decay_reference}
    if scaled:
        out["bp_scaled_by"] = str(header.get("scaled_by"))[:100]
    note = [str(header["scaling_note"])[:300]] if header.get("scaling_note") else []
    if note or errors:
        out["bp_scaling_note"] = "; ".join(note + errors)[:400]
    return out
