"""Concurrent `run` client vs a sequential loop, against the same real vLLM server (tiny model).

    .venv/bin/python benchmarks/client_bench.py [--num 32] [--concurrency 16] [--max-seqs N] [--max-tokens 64]
           [--repeats 3] [--seed 0]

Starts vLLM on 127.0.0.1 with serve_vllm.sh --background (as the tests and the demo do) with --max-num-seqs at
least the client's concurrency (default: equal to it), so the server can batch every request the client has in
flight. Both paths send the same prompts with the same sampling settings and per-request seeds (request i uses
seed+i), so they generate the same tokens; both are warmed up first; then each is timed --repeats times,
alternating which goes first, and the median ratio sequential / concurrent is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import openai

from quantummind.serving import start_background_server
from quantummind.tiny_model import build_tiny_model

from evaluation.client import collect, read_replies
from evaluation.prompts import PromptSpec, build_prompts

TEMPERATURE = 0.7


def sequential(client: openai.OpenAI, prompts: list[PromptSpec], max_tokens: int, seed: int) -> tuple[float, dict]:
    """One request at a time with the plain OpenAI client; returns (seconds, id -> reply)."""
    t0 = time.perf_counter()
    replies = {}
    for i, p in enumerate(prompts):
        r = client.chat.completions.create(model="tiny", messages=p.messages, max_tokens=max_tokens,
                                           temperature=TEMPERATURE, seed=seed + i)
        replies[p.id] = r.choices[0].message.content or ""
    return time.perf_counter() - t0, replies


def concurrent(base_url: str, prompts: list[PromptSpec], max_tokens: int, seed: int, concurrency: int,
               out: Path) -> tuple[float, dict]:
    """evaluation.client.collect (what `python -m evaluation run` uses); returns (seconds, id -> reply)."""
    t0 = time.perf_counter()
    summary = asyncio.run(collect(prompts, base_url=base_url, model="tiny", api_key="EMPTY", out_path=out,
                                  concurrency=concurrency, temperature=TEMPERATURE, max_tokens=max_tokens,
                                  seed=seed, progress=False))
    seconds = time.perf_counter() - t0
    if summary.received != len(prompts) or summary.failed:
        raise RuntimeError(f"collect got {summary.received} replies ({summary.failed} failed) of {len(prompts)}")
    return seconds, {r["id"]: r["reply"] for r in read_replies(out)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num", type=int, default=32, help="requests per timed run (default 32)")
    ap.add_argument("--concurrency", type=int, default=16, help="client requests in flight (default 16)")
    ap.add_argument("--max-seqs", type=int, default=None, help="server --max-num-seqs (default: = --concurrency)")
    ap.add_argument("--max-tokens", type=int, default=64, help="max tokens per reply (default 64)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each path (default 3)")
    ap.add_argument("--seed", type=int, default=0, help="base sampling seed; request i uses seed+i (default 0)")
    args = ap.parse_args()
    max_seqs = args.max_seqs or args.concurrency
    if max_seqs < args.concurrency:
        print(f"error: --max-seqs {max_seqs} < --concurrency {args.concurrency}: the server could not batch "
              "every request in flight, which measures the server's limit, not the client", file=sys.stderr)
        return 2
    if min(args.num, args.concurrency, args.max_tokens, args.repeats) < 1:
        print("error: --num, --concurrency, --max-tokens and --repeats must be >= 1", file=sys.stderr)
        return 2
    prompts = build_prompts(args.num)
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPU cores, load average {load[0]:.1f} at start; "
          f"server --max-num-seqs {max_seqs}, client concurrency {args.concurrency}")
    seq_s: list[float] = []
    conc_s: list[float] = []
    same = 0
    with tempfile.TemporaryDirectory() as d:
        model_dir = build_tiny_model(Path(d) / "tiny-qwen2", seed=0)
        t0 = time.perf_counter()
        with start_background_server(model_dir, "tiny", Path(d) / "serve", max_seqs=max_seqs) as server:
            base_url = server.base_url
            print(f"vLLM ready in {time.perf_counter() - t0:.0f} s at {base_url}")
            client = openai.OpenAI(base_url=base_url, api_key="EMPTY")
            # warm-up: both paths once, on a full batch, untimed
            warm = prompts[:args.concurrency]
            sequential(client, warm[:4], args.max_tokens, args.seed)
            concurrent(base_url, warm, args.max_tokens, args.seed, args.concurrency, Path(d) / "warm.jsonl")
            for r in range(args.repeats):
                order = ("seq", "conc") if r % 2 == 0 else ("conc", "seq")
                for path in order:
                    if path == "seq":
                        s, seq_replies = sequential(client, prompts, args.max_tokens, args.seed)
                        seq_s.append(s)
                    else:
                        s, conc_replies = concurrent(base_url, prompts, args.max_tokens, args.seed,
                                                     args.concurrency, Path(d) / f"run{r}.jsonl")
                        conc_s.append(s)
                same += sum(seq_replies[p.id] == conc_replies[p.id] for p in prompts)
                print(f"  run {r + 1}/{args.repeats} ({' then '.join(order)}): sequential {seq_s[-1]:6.2f} s, "
                      f"concurrent {conc_s[-1]:6.2f} s, ratio {seq_s[-1] / conc_s[-1]:.2f}x")
            client.close()
    ratios = [s / c for s, c in zip(seq_s, conc_s)]
    print(f"{args.num} chat requests, max_tokens {args.max_tokens}, temperature {TEMPERATURE}, seeds "
          f"{args.seed}..{args.seed + args.num - 1}; identical replies on both paths: {same}/{args.num * args.repeats}")
    print(f"  sequential loop (openai.OpenAI), median of {args.repeats}:             {statistics.median(seq_s):6.2f} s")
    print(f"  evaluation.client.collect, concurrency {args.concurrency}, median of {args.repeats}: "
          f"{statistics.median(conc_s):6.2f} s")
    print(f"  speed-up (median of the {args.repeats} per-run ratios): {statistics.median(ratios):.2f}x "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
