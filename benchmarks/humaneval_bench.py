"""HumanEval scoring throughput: 151 tasks x 10 samples (canonical and wrong bodies mixed) in the sandbox.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/humaneval_bench.py [--variant normal] [--samples 10]
        [--workers 2] [--baseline-programs 60]

Goal (issue 11): <= 4 minutes wall for the 1,510 programs on 2 cores, >= 5x faster than the baseline measured
in the same run: one fresh interpreter per program without any sandbox (evaluation.humaneval.outside), timed
on --baseline-programs of the same programs (spread over the tasks, same workers) and extrapolated to all.
Every program runs, excluded tasks included (their solutions fail fast offline). Verdicts of the sandbox and
the baseline are compared on the baseline's programs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from evaluation.humaneval.assemble import build_program
from evaluation.humaneval.outside import run_many
from evaluation.humaneval.scoring import CANONICAL_PASSED_MARK, Sample, default_limits, score_samples
from evaluation.humaneval.tasks import load_tasks, tasks_by_id

WRONG = {"normal": "    return None\n", "hard": "def {entry_point}(*args, **kwargs):\n    return None\n"}


def make_samples(variant: str, samples: int) -> list[Sample]:
    """Even samples: the canonical solution; odd ones: a wrong body (returns None)."""
    out = []
    for t in load_tasks(variant):
        for s in range(samples):
            comp = t.canonical_solution if s % 2 == 0 else WRONG[variant].format(entry_point=t.entry_point)
            out.append(Sample(t.task_id, s, comp))
    return out


def _sandbox_passed(r: dict) -> bool:
    """Did the program pass in the sandbox (for an excluded task, the note records its actual outcome)?"""
    return bool(r["passed"]) or str(r.get("error") or "").endswith(CANONICAL_PASSED_MARK)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", choices=("normal", "hard"), default="normal")
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--baseline-programs", type=int, default=60)
    args = ap.parse_args()
    samples = make_samples(args.variant, args.samples)
    n = len(samples)
    t0 = time.perf_counter()
    results = score_samples(samples, args.variant, workers=args.workers, limits=default_limits(), run_excluded=True)
    ours = time.perf_counter() - t0
    kinds = Counter(r["failure"] or "passed" for r in results)

    stride = max(1, n // max(1, args.baseline_programs))
    picked = list(range(0, n, stride))[: args.baseline_programs]
    picked = [i + (j % 2) for j, i in enumerate(picked) if i + (j % 2) < n]  # canonical and wrong alike
    tasks = tasks_by_id(args.variant)
    programs = [build_program(samples[i].completion, tasks[samples[i].task_id], args.variant).code for i in picked]
    t0 = time.perf_counter()
    base_results = run_many(programs, workers=args.workers, timeout_s=default_limits().timeout_s)
    base_measured = time.perf_counter() - t0
    base = base_measured * n / len(picked)
    agree = sum(_sandbox_passed(results[i]) == b.passed for i, b in zip(picked, base_results))

    print(f"Qiskit HumanEval ({args.variant}): {len(tasks)} tasks x {args.samples} samples = {n} programs "
          f"(canonical and wrong mixed), {args.workers} workers")
    print(f"  sandbox (fork server, namespaces, Landlock, rlimits): {ours:7.1f} s wall, "
          f"{ours / n * 1000:.0f} ms/program  (goal <= 240 s)")
    print(f"    verdicts: {dict(kinds)}")
    print(f"  fresh interpreter per program, no sandbox: {base_measured:.1f} s for {len(picked)} programs, "
          f"extrapolated to {n}: {base:7.1f} s")
    print(f"  speed-up: {base / ours:.1f}x  (goal >= 5x); verdicts agree on {agree}/{len(picked)} baseline programs")
    return 0 if ours <= 240 and base / ours >= 5 and agree == len(picked) else 1


if __name__ == "__main__":
    sys.exit(main())
