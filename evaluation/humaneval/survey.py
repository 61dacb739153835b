"""What crosses the candidate's boundary: a survey of every canonical solution (both variants).

`python -m evaluation.humaneval.survey --out DIR` runs each task's canonical solution with its test the way
upstream does (one program, trusted dataset code only, no sandbox: run it on the dataset only), except that
`check` gets a recording wrapper instead of the function, and the function's global name is bound to a
second one. Per task it records the type (nested: `list[int]`, `dict[str, int]`, ...) of every argument the
test passes and every value the candidate returns, whether a call changed an argument (pickled before and
after), the exceptions the candidate raised, whether the test called it by its global name, which attributes
of the candidate the test read, and whether the check passed. Writes survey.jsonl (one row per task and
variant) and prints the counts that docs/humaneval.md ("The judge's wire") quotes. The split judge
(evaluation/humaneval/wire.py) was designed from these counts.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import select
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from evaluation.humaneval.tasks import VARIANTS, Task, load_tasks

_SHORT = {"builtins", "numpy", "qiskit", "qiskit_aer", "qiskit_ibm_runtime", "matplotlib"}


def type_tree(v: Any, depth: int = 0) -> str:
    """`list[int]`, `dict[str, int]`, `tuple[QuantumCircuit, Figure]`, `qiskit...Statevector` (module head kept)."""
    t = type(v)
    mod = (t.__module__ or "?").split(".")[0]
    name = t.__qualname__ if mod == "builtins" else f"{mod}.{t.__qualname__}"
    if depth > 4:
        return name
    if isinstance(v, (list, set, frozenset)) or (isinstance(v, tuple) and len(v) > 8):
        inner = sorted({type_tree(x, depth + 1) for x in list(v)[:64]})
        return f"{name}[{' | '.join(inner)}]"
    if isinstance(v, tuple):
        return f"{name}[{', '.join(type_tree(x, depth + 1) for x in v)}]"
    if isinstance(v, dict):
        keys = sorted({type_tree(x, depth + 1) for x in list(v)[:64]})
        vals = sorted({type_tree(x, depth + 1) for x in list(v.values())[:64]})
        return f"{name}[{' | '.join(keys)}: {' | '.join(vals)}]"
    if hasattr(v, "dtype") and hasattr(v, "shape") and mod == "numpy":
        return f"{name}<{v.dtype}>"
    return name


def _fingerprint(args: tuple, kwargs: dict) -> bytes | None:
    try:
        return pickle.dumps((args, kwargs))
    except Exception:  # noqa: BLE001 - an unpicklable argument: mutation not measured
        return None


class Recorder:
    """Stands for the candidate: records every call and every attribute read, forwards to the function."""

    def __init__(self, fn, row: dict, via: str):
        object.__setattr__(self, "_fn", fn)
        object.__setattr__(self, "_row", row)
        object.__setattr__(self, "_via", via)

    def __getattr__(self, name: str):
        self._row["attrs"].append(name)
        return getattr(self._fn, name)

    def __call__(self, *args, **kwargs):
        row = self._row
        row["calls_" + self._via] += 1
        for a in args:
            row["arg_types"].append(type_tree(a))
        for k, a in kwargs.items():
            row["arg_types"].append(f"{k}={type_tree(a)}")
        before = _fingerprint(args, kwargs)
        try:
            out = self._fn(*args, **kwargs)
        except BaseException as exc:
            row["raised"].append(type(exc).__name__)
            raise
        finally:
            after = _fingerprint(args, kwargs)
            if before is not None and after is not None and before != after:
                row["mutated"] = True
        row["ret_types"].append(type_tree(out))
        return out


def survey_task(task: Task, variant: str) -> dict:
    """In a forked child: the canonical program with recorders around the candidate."""
    row: dict[str, Any] = {"task_id": task.task_id, "variant": variant, "arg_types": [], "ret_types": [],
                           "raised": [], "mutated": False, "calls_candidate": 0, "calls_global": 0, "attrs": [],
                           "passed": False, "error": None}
    prompt = task.prompt + "\n" if variant == "normal" else ""
    ns: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(prompt + task.canonical_solution + "\n", "solution.py", "exec"), ns)
    fn = ns[task.entry_point]
    ns[task.entry_point] = Recorder(fn, row, "global")
    try:
        test = task.test
        calls_check = "\ncheck(" in "\n" + test
        exec(compile(test, "test.py", "exec"), ns)
        if not calls_check:
            ns["check"](Recorder(fn, row, "candidate"))
        row["passed"] = True
    except BaseException as exc:  # noqa: BLE001
        row["error"] = f"{type(exc).__name__}: {exc}"[:300]
    row["test_names_global"] = task.test.replace(f"check({task.entry_point})", "").count(task.entry_point) > 0
    return row


def _run_forked(task: Task, variant: str, timeout_s: float) -> dict:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            os.chdir(os.environ.get("QM_SURVEY_CWD", "/tmp"))
            data = json.dumps(survey_task(task, variant)).encode()
        except BaseException as exc:  # noqa: BLE001
            data = json.dumps({"task_id": task.task_id, "variant": variant, "error": repr(exc)[:300]}).encode()
        os.write(w, data) if len(data) < 60000 else os.write(w, data[:60000])
        os._exit(0)
    os.close(w)
    deadline = time.monotonic() + timeout_s
    chunks = []
    while True:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([r], [], [], max(0.0, left))
        if not ready:
            os.kill(pid, 9)
            chunks = [json.dumps({"task_id": task.task_id, "variant": variant, "error": "timeout"}).encode()]
            break
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks) or b'{"error": "died"}')


def summarise(rows: list[dict]) -> dict[str, Counter]:
    """Counts over tasks (per variant): how many tasks pass each argument / return type, etc."""
    out: dict[str, Counter] = {k: Counter() for k in ("arg", "ret", "flags")}
    for r in rows:
        for t in set(r.get("arg_types", [])):
            out["arg"][t] += 1
        for t in set(r.get("ret_types", [])):
            out["ret"][t] += 1
        f = out["flags"]
        f["tasks"] += 1
        f["passed"] += bool(r.get("passed"))
        f["mutated an argument"] += bool(r.get("mutated"))
        f["called by global name"] += bool(r.get("calls_global"))
        f["global name in test text"] += bool(r.get("test_names_global"))
        f["read an attribute of the candidate"] += bool(r.get("attrs"))
        f["candidate raised (check passed)"] += bool(r.get("raised")) and bool(r.get("passed"))
        f["no argument"] += not r.get("arg_types")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evaluation.humaneval.survey", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="writes survey.jsonl here")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per task (default 300)")
    ap.add_argument("--tasks", default=None, help="only these task numbers, comma-separated")
    args = ap.parse_args(argv)
    from evaluation.humaneval.judge import preload

    preload()
    rows = []
    for variant in VARIANTS:
        for t in load_tasks(variant):
            if args.tasks and str(t.number) not in args.tasks.split(","):
                continue
            rows.append(_run_forked(t, variant, args.timeout))
            print(f"{variant} {t.task_id}: {'ok' if rows[-1].get('passed') else rows[-1].get('error')}",
                  file=sys.stderr, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "survey.jsonl", "w", encoding="ascii") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=True) + "\n")
    for variant in VARIANTS:
        s = summarise([r for r in rows if r.get("variant") == variant])
        print(f"== {variant}")
        for key, c in s.items():
            print(f"-- {key}")
            for name, n in c.most_common():
                print(f"{n:4d}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
