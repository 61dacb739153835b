"""Concurrent `run` client vs a sequential loop, against the same real vLLM server (tiny model).

    .venv/bin/python benchmarks/client_bench.py [--num 32] [--concurrency 16] [--max-tokens 64]

Starts vLLM on 127.0.0.1 with serve_vllm.sh --background (as the tests and the demo do), sends the same prompts
both ways (same sampling settings), and prints the wall-clock ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import openai

from quantummind.serving import start_background_server
from quantummind.tiny_model import build_tiny_model

from evaluation.client import collect
from evaluation.prompts import build_prompts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    prompts = build_prompts(args.num)
    with tempfile.TemporaryDirectory() as d:
        model_dir = build_tiny_model(Path(d) / "tiny-qwen2", seed=0)
        t0 = time.perf_counter()
        with start_background_server(model_dir, "tiny", Path(d) / "serve") as server:
            base_url = server.base_url
            print(f"vLLM ready in {time.perf_counter() - t0:.0f} s at {base_url}")
            client = openai.OpenAI(base_url=base_url, api_key="EMPTY")
            client.chat.completions.create(model="tiny", messages=prompts[0].messages, max_tokens=8)  # warm-up
            t0 = time.perf_counter()
            for p in prompts:
                client.chat.completions.create(model="tiny", messages=p.messages, max_tokens=args.max_tokens,
                                               temperature=0.7)
            seq = time.perf_counter() - t0
            t0 = time.perf_counter()
            summary = asyncio.run(collect(prompts, base_url=base_url, model="tiny", api_key="EMPTY",
                                          out_path=Path(d) / "replies.jsonl", concurrency=args.concurrency,
                                          max_tokens=args.max_tokens, progress=False))
            conc = time.perf_counter() - t0
    print(f"{args.num} chat requests, max_tokens {args.max_tokens}:")
    print(f"  sequential loop (openai.OpenAI):                 {seq:6.2f} s")
    print(f"  evaluation.client.collect, concurrency {args.concurrency:<3}:     {conc:6.2f} s "
          f"({summary.received} replies written)")
    print(f"  speed-up: {seq / conc:.1f}x")


if __name__ == "__main__":
    main()
