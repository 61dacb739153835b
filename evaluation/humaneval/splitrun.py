"""The split judge without the sandbox: G (prompt + completion) in its own process, T (the test) here.

A reference harness for evaluation/humaneval/wire.py until the sandbox runs it (G in the reply process, T in
the locked-down judge process, docs/sandbox.md): G is a real separate process (`spawn`: a fresh `python -c`
interpreter; `fork`: a fork of this one, already warm), talking JSON lines over its stdin/stdout (its own
prints go to stderr), and T runs `judge_calls` in the calling process. No isolation: run trusted or test
code only.

`python -m evaluation.humaneval.splitrun --variant normal` runs every canonical solution through the split
path (each T in a fork of a preloaded process, each G a fork of that) and prints how many pass and how long
the set took.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from evaluation.humaneval.assemble import SplitProgram, split_program
from evaluation.humaneval.outside import fresh_env
from evaluation.humaneval.tasks import VARIANTS, exclusions, load_tasks, tasks_by_id
from evaluation.humaneval.wire import MAX_LINE, exec_candidate, judge_calls, serve_calls

# G in a fresh interpreter: the wire on dups of fds 0/1, the reply's own stdin/stdout on /dev/null and stderr.
_G_BOOT = r"""
import os, sys
wire_in, wire_out = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb")
null = os.open(os.devnull, os.O_RDONLY)
os.dup2(null, 0); os.dup2(2, 1)
sys.stdin = open(0, closefd=False); sys.stdout = open(1, "w", closefd=False)
from evaluation.humaneval.wire import exec_candidate, serve_calls
code = open(sys.argv[1], encoding="utf-8").read()
namespace, exec_error = exec_candidate(code)
serve_calls(namespace, {"entry_point": sys.argv[2]}, wire_in, wire_out, exec_error)
"""


class PipeCaller:
    """`call(request) -> response line | None` over a pair of pipe fds, with a deadline and the size cap."""

    def __init__(self, to_g: int, from_g: int, deadline: float):
        self.to_g, self.from_g, self.deadline = to_g, from_g, deadline
        self.buf = bytearray()

    def __call__(self, request: bytes) -> bytes | None:
        try:
            os.write(self.to_g, request)
        except OSError:   # G is gone
            return None
        seen = 0   # bytes of buf already searched for the newline (a 31 MiB answer arrives in 64 KiB reads)
        while (end := self.buf.find(b"\n", seen)) < 0:
            seen = len(self.buf)
            left = self.deadline - time.monotonic()
            if left <= 0 or len(self.buf) > MAX_LINE:
                return None
            ready, _, _ = select.select([self.from_g], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.from_g, 1 << 20)
            if not chunk:
                return None
            self.buf += chunk
        line = bytes(self.buf[:end + 1])
        del self.buf[:end + 1]
        return line


def _fork_g(code: str, entry_point: str, wd: str) -> tuple[int, int, int]:
    """G as a fork of this process: (pid, fd to write requests, fd to read answers)."""
    req_r, req_w = os.pipe()
    resp_r, resp_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(req_w)
            os.close(resp_r)
            os.chdir(wd)
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(2, 1)
            sys.stdout = open(1, "w", closefd=False)
            namespace, exec_error = exec_candidate(code)
            serve_calls(namespace, {"entry_point": entry_point}, os.fdopen(req_r, "rb"),
                        os.fdopen(resp_w, "wb"), exec_error)
        finally:
            os._exit(0)
    os.close(req_r)
    os.close(resp_w)
    return pid, req_w, resp_r


def run_split(program: SplitProgram, entry_point: str, timeout_s: float = 30.0, mode: str = "spawn") -> dict[str, Any]:
    """One completion through the split path -> {"passed", "failure", "error", "exec_seconds"}."""
    if program.code is None:
        return {"passed": False, "failure": "no_code", "error": "empty completion", "exec_seconds": None}
    job = {"prelude": program.prelude, "test": program.test, "entry_point": entry_point,
           "calls_check": program.calls_check}
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    with tempfile.TemporaryDirectory(prefix="qm-he-split-") as wd:
        if mode == "fork":
            pid, to_g, from_g = _fork_g(program.code, entry_point, wd)
            proc = None
        else:
            Path(wd, "reply.py").write_text(program.code, encoding="utf-8")
            proc = subprocess.Popen([sys.executable, "-c", _G_BOOT, str(Path(wd, "reply.py")), entry_point],
                                    cwd=wd, env={**fresh_env(wd), "PYTHONPATH": _import_path()},
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            pid, to_g, from_g = proc.pid, proc.stdin.fileno(), proc.stdout.fileno()
        try:
            out = judge_calls(job, None, PipeCaller(to_g, from_g, deadline), deadline)
        finally:
            for fd in (to_g, from_g):
                try:
                    os.close(fd)
                except OSError:
                    pass
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if proc is not None:
                proc.stdin = proc.stdout = None  # fds closed above
                proc.wait()
            else:
                os.waitpid(pid, 0)
    return {**out, "exec_seconds": round(time.monotonic() - t0, 3)}


def _import_path() -> str:
    here = str(Path(__file__).resolve().parents[2])
    return os.pathsep.join([here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])


def _canonical_one(arg: tuple[str, str, float]) -> dict[str, Any]:
    variant, task_id, timeout_s = arg
    task = tasks_by_id(variant)[task_id]
    with tempfile.TemporaryDirectory(prefix="qm-he-split-t-") as wd:
        os.chdir(wd)  # T's own scratch directory (the judge process writes nothing)
        res = run_split(split_program(task.canonical_solution, task, variant), task.entry_point,
                        timeout_s, mode="fork")
    return {"task_id": task_id, "variant": variant, **res}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evaluation.humaneval.splitrun", description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", default="both", choices=(*VARIANTS, "both"))
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per task (default 120)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", default=None, help="only these task numbers, comma-separated")
    ap.add_argument("--out", type=Path, default=None, help="write split.jsonl (one result per task) here")
    args = ap.parse_args(argv)
    from evaluation.humaneval.judge import preload

    preload()
    excluded = exclusions()
    todo = [(v, t.task_id, args.timeout) for v in (VARIANTS if args.variant == "both" else (args.variant,))
            for t in load_tasks(v) if t.task_id not in excluded
            and (not args.tasks or str(t.number) in args.tasks.split(","))]
    t0 = time.monotonic()
    with multiprocessing.get_context("fork").Pool(max(1, args.workers), maxtasksperchild=1) as pool:
        results = list(pool.imap(_canonical_one, todo))
    wall = time.monotonic() - t0
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        with open(args.out / "split.jsonl", "w", encoding="ascii") as fh:
            for r in results:
                fh.write(json.dumps(r, ensure_ascii=True) + "\n")
    for v in sorted({r["variant"] for r in results}):
        rows = [r for r in results if r["variant"] == v]
        print(f"{v}: {sum(r['passed'] for r in rows)}/{len(rows)} canonical solutions pass the split judge")
    for r in results:
        if not r["passed"]:
            print(f"  {r['variant']} {r['task_id']}: {r['failure']}: {r['error']}")
    print(f"{len(results)} programs in {wall:.0f} s wall with {args.workers} workers "
          f"(sum of per-program times {sum(r['exec_seconds'] or 0 for r in results):.0f} s)")
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
