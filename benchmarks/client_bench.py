"""Concurrent `run` client vs a sequential loop, against the same real vLLM server (tiny model).

    .venv/bin/python benchmarks/client_bench.py [--num 32] [--concurrency 16] [--max-tokens 64]

Starts vLLM from .venv-serve on 127.0.0.1 exactly as the test fixture does, sends the same prompts
both ways (same sampling settings), and prints the wall-clock ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
from pathlib import Path

import openai

from quantummind.paths import SERVE_VENV, offline_env, venv_python
from quantummind.serving import free_port, stop_process_group, wait_for_health
from quantummind.tiny_model import build_tiny_model

from evaluation.client import collect
from evaluation.prompts import build_prompts


def start_server(model_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = offline_env()
    env.update({"VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1"})
    cmd = [str(venv_python(SERVE_VENV)), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
           "--max-model-len", "1024", "--enforce-eager"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_for_health(base_url, timeout_s=300, proc=proc)
    except Exception:
        stop_process_group(proc)
        raise
    return proc, base_url


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
        proc, base_url = start_server(model_dir, Path(d) / "server.log")
        print(f"vLLM ready in {time.perf_counter() - t0:.0f} s at {base_url}")
        try:
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
        finally:
            stop_process_group(proc)
    print(f"{args.num} chat requests, max_tokens {args.max_tokens}:")
    print(f"  sequential loop (openai.OpenAI):                 {seq:6.2f} s")
    print(f"  evaluation.client.collect, concurrency {args.concurrency:<3}:     {conc:6.2f} s "
          f"({summary.received} replies written)")
    print(f"  speed-up: {seq / conc:.1f}x")


if __name__ == "__main__":
    main()
