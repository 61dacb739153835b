"""HumanEval scoring throughput: 151 tasks x 10 samples (canonical solutions and wrong bodies mixed) in the sandbox.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/humaneval_bench.py [--variant normal] [--samples 10]
        [--workers 2] [--baseline-programs 60]

Goal (issue 11): <= 4 minutes wall for the 1,510 programs on 2 cores, >= 5x faster than the baseline measured
in the same run: one fresh interpreter per program without any sandbox (evaluation.humaneval.outside), timed
on --baseline-programs of the same programs (a fixed random subset, same workers) and extrapolated to all.
Every program runs, excluded tasks included (their solutions fail fast offline). Verdicts of the sandbox and
the baseline are compared on the baseline's programs.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter

from evaluation.humaneval.assemble import build_program
from evaluation.humaneval.outside import run_many
from evaluation.humaneval.scoring import CANONICAL_PASSED_MARK, Sample, default_limits, score_samples
from evaluation.humaneval.tasks import load_tasks, tasks_by_id

WRONG = {"normal": "    return None\n", "hard": "def {entry_point}(*args, **kwargs):\n    return None\n"}


def make_samples(variant: str, samples: int, canonical_share: float, num_tasks: int | None = None) -> list[Sample]:
    """Per task, the first round(share * samples) samples are the canonical solution, the rest a wrong body
    (returns None: fails the test at once)."""
    out = []
    n_canonical = round(canonical_share * samples)
    for t in load_tasks(variant)[:num_tasks]:
        for s in range(samples):
            comp = t.canonical_solution if s < n_canonical else WRONG[variant].format(entry_point=t.entry_point)
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
    ap.add_argument("--canonical-share", type=float, default=0.3,
                    help="share of each task's samples that are the canonical solution (default 0.3: about the "
                         "pass@1 of good Qiskit models; the rest are wrong bodies)")
    ap.add_argument("--num-tasks", type=int, default=None, help="only the first K tasks (a smoke test)")
    args = ap.parse_args()
    samples = make_samples(args.variant, args.samples, args.canonical_share, args.num_tasks)
    n = len(samples)
    t0 = time.perf_counter()
    results = score_samples(samples, args.variant, workers=args.workers, limits=default_limits(), run_excluded=True)
    ours = time.perf_counter() - t0
    kinds = Counter(r["failure"] or "passed" for r in results)

    picked = sorted(random.Random(0).sample(range(n), min(n, args.baseline_programs)))  # a fixed random subset
    tasks = tasks_by_id(args.variant)
    programs = [build_program(samples[i].completion, tasks[samples[i].task_id], args.variant).code for i in picked]
    t0 = time.perf_counter()
    base_results = run_many(programs, workers=args.workers, timeout_s=default_limits().timeout_s)
    base_measured = time.perf_counter() - t0
    base = base_measured * n / len(picked)
    agree = sum(_sandbox_passed(results[i]) == b.passed for i, b in zip(picked, base_results))

    print(f"Qiskit HumanEval ({args.variant}): {len({s.task_id for s in samples})} tasks x {args.samples} samples = {n} programs "
          f"(canonical and wrong mixed), {args.workers} workers")
    canon = [r for r, s in zip(results, samples) if s.completion == tasks[s.task_id].canonical_solution]
    heavy = sorted(((r["exec_seconds"] or 0.0, r["task_id"]) for r in canon), reverse=True)[:5]
    print(f"  sandbox (fork server, namespaces, Landlock, rlimits): {ours:7.1f} s wall, "
          f"{ours / n * 1000:.0f} ms/program  (goal <= 240 s)")
    print(f"    verdicts: {dict(kinds)}")
    print(f"    program seconds (sum): canonical {sum(r['exec_seconds'] or 0 for r in canon):.0f} "
          f"({len(canon)} programs; slowest {heavy}), wrong "
          f"{sum(r['exec_seconds'] or 0 for r in results) - sum(r['exec_seconds'] or 0 for r in canon):.0f} "
          f"({n - len(canon)} programs)")
    print(f"  fresh interpreter per program, no sandbox: {base_measured:.1f} s for {len(picked)} programs, "
          f"extrapolated to {n}: {base:7.1f} s")
    print(f"  speed-up: {base / ours:.1f}x  (goal >= 5x); verdicts agree on {agree}/{len(picked)} baseline programs")
    return 0 if ours <= 240 and base / ours >= 5 and agree == len(picked) else 1


if __name__ == "__main__":
    sys.exit(main())
