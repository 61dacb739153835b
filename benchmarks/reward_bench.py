"""GRPO reward latency: a GRPO-sized batch (64 completions) scored by quantummind.rewards.circuit_reward through
the kept-alive sandbox (evaluation.sandbox.Session) against a fresh `score_replies` call per batch (a new fork server
each time, what the reward would cost without the session), side by side in one run.

    .venv/bin/python benchmarks/reward_bench.py [--num 64] [--batches 3] [--workers 2]

Goal: kept-alive >= 3x faster per batch in steady state (the session's first batch, which starts the server
and preloads the whole reply stack, is reported apart), and its per-completion cost within 1.5x of
score_bench.py's per reply. The batches alternate (fresh, kept-alive, fresh, ...) so both see the same machine
load. Completions: the replies of score_bench.py (three answer styles) on RL prompts at 2-10 qubits (a quarter
truncated mid-fence, as a max_completion_length cut leaves them), in two mixes, each timed on its own:
  qiskit-only   the replies as they are: a fresh server preloads nothing for them;
  stack         one in four also imports what chat models' answers often bring along (qiskit_aer,
                qiskit_algorithms, matplotlib), which a fresh server must import before its first reply.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from score_bench import STYLES  # noqa: E402  (benchmarks/ is sys.path[0])
from evaluation.sandbox import Session  # noqa: E402
from evaluation.scoring import circuit_cfg, score_replies  # noqa: E402
from quantummind.rewards import circuit_reward, grade_circuit  # noqa: E402


STACK_IMPORTS = ("from qiskit_aer import AerSimulator\nfrom qiskit_algorithms.optimizers import COBYLA\n"
                 "import matplotlib.pyplot as plt\n")


def make_batch(num: int, seed: int, stack: bool = False) -> tuple[list[str], dict[str, list]]:
    rng = random.Random(seed)
    comps, ham, qubits, cons = [], [], [], []
    for i in range(num):
        n = rng.randint(2, 10)
        text = STYLES[i % len(STYLES)].format(n=n)
        if stack and i % 4 == 1:
            text = text.replace("```python\n", "```python\n" + STACK_IMPORTS, 1)
        if i % 4 == 3:
            text = text[: len(text) * 2 // 3]  # cut by max_completion_length
        comps.append(text)
        ham.append(rng.choice(["xy_chain", "heisenberg", "tfim"]))
        qubits.append(n)
        cons.append(rng.choice(["", "Use only RY and CX gates", "Minimize circuit depth"]))
    return comps, {"hamiltonian": ham, "num_qubits": qubits, "constraint": cons}


def fresh_rewards(comps: list[str], cols: dict[str, list], workers: int) -> list[float | None]:
    records = [{"id": str(i), "hamiltonian": h, "num_qubits": n, "constraint": c, "reply": r}
               for i, (r, h, n, c) in enumerate(zip(comps, cols["hamiltonian"], cols["num_qubits"],
                                                    cols["constraint"]))]
    return [grade_circuit(r) for r in score_replies(records, workers=workers)]


def time_mix(args: argparse.Namespace, stack: bool) -> tuple[float, float, float, list[float], list[float], list]:
    """(first kept-alive batch, median fresh, median kept-alive, fresh times, kept times, first rewards)."""
    fresh_s: list[float] = []
    kept_s: list[float] = []
    with Session(circuit_cfg(workers=args.workers)) as session:
        comps, cols = make_batch(args.num, seed=0, stack=stack)
        t0 = time.perf_counter()
        first = circuit_reward(None, comps, session=session, **cols)
        first_s = time.perf_counter() - t0
        for b in range(args.batches):
            comps, cols = make_batch(args.num, seed=b + 1, stack=stack)
            t0 = time.perf_counter()
            want = fresh_rewards(comps, cols, args.workers)
            fresh_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            got = circuit_reward(None, comps, session=session, **cols)
            kept_s.append(time.perf_counter() - t0)
            if got != want:
                raise SystemExit(f"error: batch {b}: kept-alive rewards differ from fresh ones")
    return first_s, statistics.median(fresh_s), statistics.median(kept_s), fresh_s, kept_s, first


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num", type=int, default=64, help="completions per batch (default 64: 8 prompts x 8)")
    ap.add_argument("--batches", type=int, default=3, help="steady-state batches timed per side (default 3)")
    ap.add_argument("--workers", type=int, default=2, help="sandbox workers (default 2)")
    args = ap.parse_args(argv)
    if args.num < 1 or args.batches < 1 or args.workers < 1:
        ap.error("--num, --batches and --workers must be >= 1")
    print(f"{args.num} completions per batch, {args.workers} workers, {args.batches} batches per side and mix")
    for name, stack in (("qiskit-only", False), ("stack", True)):
        first_s, fresh, kept, fresh_s, kept_s, first = time_mix(args, stack)
        decided = [r for r in first if r is not None]
        print(f"[{name}] rewards of the first batch: mean {statistics.mean(decided):.3f}, "
              f"{sum(r >= 0.6 for r in decided)}/{len(first)} verified")
        print(f"[{name}] fresh score_replies per batch : median {fresh:6.2f} s ({fresh / args.num * 1000:6.1f} "
              f"ms/completion) [{', '.join(f'{x:.2f}' for x in fresh_s)}]")
        print(f"[{name}] kept-alive session, steady    : median {kept:6.2f} s ({kept / args.num * 1000:6.1f} "
              f"ms/completion) [{', '.join(f'{x:.2f}' for x in kept_s)}]; first batch (start + preload) "
              f"{first_s:.2f} s")
        print(f"[{name}] ratio fresh / kept-alive: {fresh / kept:.2f}x (goal >= 3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
