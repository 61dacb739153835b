"""The reference run: each program in its own fresh interpreter, without any sandbox.

Two users: `python -m evaluation.humaneval.outside` runs every canonical solution assembled the way upstream's
scripts/test_solutions.py does (prompt + "\\n" + canonical_solution + "\\n" + test, then check(entry_point);
no prompt in the hard variant) and, with --compare DIR, lists the tasks whose verdict differs from the
sandboxed `humaneval canonical` in DIR; benchmarks/humaneval_bench.py times it as the baseline.
Trusted code only (the dataset's own solutions): this runs with the caller's privileges.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from evaluation.humaneval.judge import verdict
from evaluation.humaneval.scoring import CANONICAL_PASSED_MARK
from evaluation.humaneval.tasks import SANDBOX_PATH, Task, check_variant, load_tasks

log = logging.getLogger(__name__)

# What the fresh interpreter runs: exec the program from argv[1], write the outcome to argv[2].
_RUNNER = r"""
import json, sys
out = {"exec_error": None, "exit": None}
src_path, result_path = sys.argv[1], sys.argv[2]
src = open(src_path, encoding="utf-8").read()
sys.argv = ["reply.py"]
try:
    exec(compile(src, "reply.py", "exec", dont_inherit=True), {"__name__": "__main__"})
except SystemExit as exc:
    out["exit"] = str(exc.code)[:200]
except BaseException as exc:
    out["exec_error"] = f"{type(exc).__name__}: {exc}"[:300]
with open(result_path, "w") as fh:
    json.dump(out, fh)
"""


@dataclass
class OutsideResult:
    passed: bool
    failure: str | None
    error: str | None
    exec_seconds: float


def upstream_program(task: Task, variant: str) -> str:
    """The program upstream's test_solutions.py executes for a canonical solution (independent of
    evaluation.humaneval.assemble)."""
    prompt = "" if check_variant(variant) == "hard" else task.prompt
    return f"{prompt}\n{task.canonical_solution}\n{task.test}\ncheck({task.entry_point})\n"


def fresh_env(workdir: str) -> dict[str, str]:
    """The environment the sandbox gives a reply (evaluation.sandbox), plus the import path."""
    env = {"HOME": workdir, "TMPDIR": workdir, "PATH": SANDBOX_PATH, "LANG": "C.UTF-8", "MPLCONFIGDIR": workdir,
           "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1",
           "QISKIT_IN_PARALLEL": "TRUE", "PYTHONDONTWRITEBYTECODE": "1"}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def run_fresh(program: str, timeout_s: float = 30.0) -> OutsideResult:
    """`program` in a new interpreter (its own temp dir as cwd); the same verdict rules as the sandbox judge."""
    with tempfile.TemporaryDirectory(prefix="qm-he-outside-") as wd:
        src, res = Path(wd, "reply.py"), Path(wd, ".result.json")
        src.write_text(program, encoding="utf-8")
        t0 = time.monotonic()
        try:
            p = subprocess.run([sys.executable, "-c", _RUNNER, str(src), str(res)], cwd=wd, env=fresh_env(wd),
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return OutsideResult(False, "timeout", f"timed out after {timeout_s:g} s", round(time.monotonic() - t0, 3))
        secs = round(time.monotonic() - t0, 3)
        if not res.exists():
            tail = p.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit status {p.returncode}"]
            return OutsideResult(False, "runtime_error", f"interpreter died: {tail[0]}"[:300], secs)
        out = json.loads(res.read_text())
        v = verdict(out.get("exec_error"), out.get("exit"))
        return OutsideResult(v["passed"], v["failure"], v["error"], secs)


def run_many(programs: list[str], *, workers: int = 1, timeout_s: float = 30.0) -> list[OutsideResult]:
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda p: run_fresh(p, timeout_s), programs))


def compare(outside: dict[str, bool], sandbox_dir: Path) -> list[str]:
    """Lines, one per task whose canonical passes outside but not in the sandbox (or the reverse)."""
    from evaluation.report import parse_jsonl

    path = sandbox_dir / "results.jsonl"
    inside = {r["task_id"]: r for r in parse_jsonl(path.read_text(encoding="utf-8"), path)}
    out = []
    for tid, ok in outside.items():
        r = inside.get(tid)
        if r is None:
            out.append(f"{tid}: not in {sandbox_dir}/results.jsonl")
            continue
        sandbox_ok = bool(r["passed"]) or str(r.get("error") or "").endswith(CANONICAL_PASSED_MARK)
        if ok != sandbox_ok:
            out.append(f"{tid}: outside {'passed' if ok else 'failed'}, sandbox {r.get('failure') or 'passed'}: "
                       f"{r.get('error')}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evaluation.humaneval.outside", description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", default="normal", choices=("normal", "hard"))
    ap.add_argument("--out", type=Path, required=True, help="writes outside.jsonl (task_id, passed, failure, error, exec_seconds)")
    ap.add_argument("--workers", type=int, default=1, help="interpreters at once (default 1)")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--compare", type=Path, default=None, metavar="DIR", help="a `humaneval canonical` output dir")
    ap.add_argument("--tasks", default=None, help="only these task numbers, comma-separated (e.g. 96,100)")
    args = ap.parse_args(argv)
    tasks = load_tasks(args.variant)
    if args.tasks:
        wanted = {f"qiskitHumanEval/{x.strip()}" for x in args.tasks.split(",") if x.strip()}
        tasks = tuple(t for t in tasks if t.task_id in wanted)
    t0 = time.monotonic()
    results = run_many([upstream_program(t, args.variant) for t in tasks], workers=args.workers, timeout_s=args.timeout)
    wall = time.monotonic() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "outside.jsonl", "w", encoding="utf-8") as fh:
        for t, r in zip(tasks, results):
            fh.write(json.dumps({"task_id": t.task_id, **asdict(r)}) + "\n")
    failing = [(t.task_id, r) for t, r in zip(tasks, results) if not r.passed]
    print(f"{args.variant}: {len(tasks) - len(failing)}/{len(tasks)} canonical solutions pass outside any sandbox "
          f"({wall:.0f} s wall, {args.workers} at once, one fresh interpreter each)")
    for tid, r in failing:
        print(f"  {tid}: {r.failure}: {r.error}")
    if args.compare:
        diff = compare({t.task_id: r.passed for t, r in zip(tasks, results)}, args.compare)
        print(f"sandbox ({args.compare}) vs outside: {len(diff)} difference(s)")
        for line in diff:
            print("  " + line)
        return 1 if diff else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
