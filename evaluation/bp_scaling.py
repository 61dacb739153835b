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
                                 BP_SCALING_TIME_S, BP_VARIANCE_THRESHOLD, BP_VERDICT_SAMPLES, MAX_DEPTH)

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


def verdict_samples(num_qubits: int, cfg: dict, rule: str, *, most: bool = False) -> int:
    """Samples at one size: cfg["bp_samples"] (30) under rule `absolute`; under `scaling` at least
    BP_VERDICT_SAMPLES' first count for that size (60 up to 8 qubits, 30 up to 10: tens of ms there),
    or with `most` the count the doubling stops at (1920, 240). The first 30 rows are the 30-sample draw."""
    base = int(cfg.get("bp_samples", BP_NUM_SAMPLES))
    if rule != "scaling":
        return base
    return max([base] + [(last if most else first) for top, first, last in BP_VERDICT_SAMPLES
                         if num_qubits <= top][:1])


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


def _scaled_measurements(job: dict, cfg: dict, header: dict) -> tuple[dict[int, tuple], list[str]]:
    """{size: (program, Hamiltonian matrix, BPResult)} of every rebuilt circuit that passed the checks,
    and why the others did not."""
    from qiskit import qpy

    from evaluation import barren, simulator
    from evaluation.hamiltonians import sparse_matrix
    from evaluation.sandbox.kinds import short_exc
    from evaluation.verify import verify_circuit

    n = int(job["num_qubits"])
    allowed = set(scaled_sizes(n))
    payload = header.get("qpy_scaled")
    results: dict[int, tuple] = {}
    errors: list[str] = []
    if not isinstance(payload, dict):
        return results, errors
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
            prog, hmat = simulator.compile_circuit(flat), sparse_matrix(job["hamiltonian"], m)
            bp = barren.detect_barren_plateau(prog, hmat, num_samples=verdict_samples(m, cfg, "scaling"),
                                              seed=cfg.get("seed", 0))
            if not math.isfinite(bp.bp_variance):
                raise ValueError("non-finite gradient variance")
            results[m] = (prog, hmat, bp)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{key} qubits: {short_exc(exc)}"[:200])
    return results, errors


def measured_verdict(key: str, n: int, measured: dict[int, tuple], *, rule: str = BP_RULE, seed: int = 0,
                     threshold: float = BP_VARIANCE_THRESHOLD, cfg: dict | None = None):
    """The verdict from {size: (program, Hamiltonian matrix, BPResult)} (the prompt's size n and the
    rebuilt ones), as the judge reaches it: under rule `scaling` a bootstrap over each size's samples
    (generator seeded with [seed, 1, round]); while the result is undecided because an interval
    straddles its cut, every size's samples double (new rows only, `barren.extend_samples`) up to
    `verdict_samples(most=True)`. Returns (BPVerdict, {size: BPResult as finally measured})."""
    import numpy as np

    from evaluation.barren import bootstrap_variances, bp_verdict, extend_samples

    cfg = cfg or {}
    results = {m: bp for m, (_, _, bp) in measured.items()}
    for rnd in range(16):
        replicates = None
        if rule == "scaling":
            rng = np.random.default_rng([seed, 1, rnd])  # stream 1: the bootstrap (the samples use `seed`)
            replicates = {m: bootstrap_variances(results[m].gradients, rng) for m in sorted(results)}
        v = bp_verdict(key, n, results[n].bp_variance, {m: r.bp_variance for m, r in results.items() if m != n},
                       rule=rule, threshold=threshold, replicates=replicates)
        grow = {m: min(2 * results[m].num_samples, verdict_samples(m, cfg, rule, most=True)) for m in results}
        if v.bp_free is not None or v.plateau_fraction is None or all(grow[m] <= results[m].num_samples
                                                                     for m in results):
            return v, results
        for m, (prog, hmat, _) in measured.items():
            results[m] = extend_samples(prog, hmat, results[m], grow[m], seed)
    return v, results


REBUILD_STATES = ("complete", "partial", "failed", "not_possible", "not_needed")


def rebuild_state(n: int, rebuilt: set[int], notes: str) -> str:
    """`bp_rebuild`: every size of scaled_sizes(n) measured (complete), some (partial), none although
    the reply had a qubit count to change (failed: it raised, timed out, built no circuit there or one
    that did not verify), none because it has no such count (not_possible), or no size to rebuild
    (not_needed, n >= 9)."""
    sizes = scaled_sizes(n)
    if not sizes:
        return "not_needed"
    if rebuilt >= set(sizes):
        return "complete"
    if rebuilt:
        return "partial"
    if not notes.strip() or "no qubit-count variable or argument" in notes:
        return "not_possible"
    return "failed"


def judge_bp(job: dict, cfg: dict, header: dict, prog, hmat, bp) -> dict[str, Any]:
    """In I: the verdict's result fields (bp_variance and its companions included: under rule
    `scaling` they may rest on more samples than the first measurement `bp`), from the prompt's
    circuit (compiled `prog`, Hamiltonian `hmat`, first measurement `bp`) and the rebuilt circuits in
    the header (measured only under rule `scaling`). Samples and bootstrap draw from cfg["seed"]
    (`--bp-seed`)."""
    rule = job.get("bp_rule") or cfg.get("bp_rule", BP_RULE)
    seed = int(cfg.get("seed", 0))
    n = int(job["num_qubits"])
    rebuilt, errors = _scaled_measurements(job, cfg, header) if rule == "scaling" else ({}, [])
    v, final = measured_verdict(job["hamiltonian"], n, {n: (prog, hmat, bp), **rebuilt}, rule=rule, seed=seed,
                                threshold=cfg.get("bp_threshold", BP_VARIANCE_THRESHOLD), cfg=cfg)
    first = final[n]
    out: dict[str, Any] = {"bp_variance": first.bp_variance, "bp_max_variance": first.max_variance,
                           "bp_dead_parameters": first.dead_parameters,
                           "bp_free": v.bp_free, "bp_rule": v.rule, "bp_basis": v.basis, "bp_ratio": v.ratio,
                           "bp_reference": v.reference, "bp_scaling": v.scaling, "bp_decay": v.decay,
                           "bp_decay_reference": v.decay_reference, "bp_ratio_ci95": v.ratio_interval,
                           "bp_decay_ci95": v.decay_interval, "bp_plateau_fraction": v.plateau_fraction,
                           "bp_seed": seed, "bp_samples": {str(m): r.num_samples for m, r in sorted(final.items())}}
    if rebuilt:
        out["bp_scaled_by"] = str(header.get("scaled_by"))[:100]
    note = [str(header["scaling_note"])[:300]] if header.get("scaling_note") else []
    if rule == "scaling":
        out["bp_rebuild"] = rebuild_state(n, set(rebuilt), "; ".join(note + errors))
    reason = [f"undecided: {v.reason}"] if v.reason else []
    if note or errors or reason:
        out["bp_scaling_note"] = "; ".join(reason + note + errors)[:600]
    return out
