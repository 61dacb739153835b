"""`python -m evaluation humaneval run|score|canonical` (exit 0: done, 1: `canonical` found a failing
solution, 2: usage/connection error). Files: docs/humaneval.md."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from evaluation.humaneval.tasks import VARIANTS

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", choices=VARIANTS, default="normal",
                   help="normal: imports + signature + docstring; hard: the problem statement only (default normal)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    g = p.add_argument_group("sandbox")
    g.add_argument("--workers", type=int, default=None, help="programs executed at once (default: CPU count)")
    g.add_argument("--timeout", "--sandbox-timeout", dest="timeout", type=float, default=30.0,
                   help="wall-clock seconds per program (default 30, as upstream; --sandbox-timeout, the circuit "
                        "commands' name, works too)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_parser(sub) -> argparse.ArgumentParser:
    """The `humaneval` subcommand of `python -m evaluation`."""
    he = sub.add_parser("humaneval", help="Qiskit HumanEval: pass@k of a served model, sandboxed",
                        description="Qiskit HumanEval (151 tasks, normal and hard variants): query a served model, "
                                    "execute every completion with the task's test in the sandbox, report pass@k.")
    hs = he.add_subparsers(dest="humaneval_command", required=True)

    run = hs.add_parser("run", help="query an OpenAI-compatible server, then score",
                        description="Send every task --samples times, save each completion as it arrives "
                                    "(DIR/samples.jsonl), then score: results.jsonl, humaneval_log.yaml, report.md, "
                                    "pass_at_k.png.")
    run.add_argument("--base-url", required=True, help="OpenAI API base URL, e.g. http://127.0.0.1:8000/v1")
    run.add_argument("--model", required=True, help="served model name")
    run.add_argument("--api-key", default=None, help="API key (default: $OPENAI_API_KEY, then $VLLM_API_KEY, then 'EMPTY')")
    run.add_argument("--samples", type=int, default=1, help="samples per task, n of pass@k (default 1; 10 for pass@10)")
    run.add_argument("--temperature", type=float, default=0.2, help="sampling temperature (default 0.2)")
    run.add_argument("--max-tokens", type=int, default=1024, help="max tokens per completion (default 1024)")
    run.add_argument("--concurrency", type=int, default=16, help="requests in flight at once (default 16)")
    run.add_argument("--api", choices=("chat", "completions"), default="chat",
                     help="chat: an instruction with the task; completions: the raw prompt, for base models (default chat)")
    run.add_argument("--seed", type=int, default=None, help="base sampling seed; request i uses seed+i (default: none)")
    run.add_argument("--num-tasks", "--num-tests", dest="num_tasks", type=int, default=None,
                     help="only the first K tasks (default: all 151; --num-tests, the circuit command's name, works too)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run: only missing samples are sent")
    run.add_argument("--request-timeout", type=float, default=300.0, help="seconds per request before a retry (default 300)")
    run.add_argument("--max-retries", type=int, default=3, help="client retries on connection errors, 429, 5xx (default 3)")
    _add_common(run)

    score = hs.add_parser("score", help="score a saved samples.jsonl (no server)",
                          description="Score saved completions (fields task_id, sample, completion).")
    score.add_argument("samples", type=Path, metavar="SAMPLES.jsonl")
    _add_common(score)

    canon = hs.add_parser("canonical", help="score the canonical solutions (no server)",
                          description="Run every task's canonical solution in the sandbox, excluded tasks included "
                                      "(the log flags an excluded task that passes). Exit 1 if a solution of a "
                                      "task that is not excluded fails.")
    _add_common(canon)
    return he


def _score_and_write(samples, args, *, model: str | None, run_excluded: bool = False,
                     extra: dict | None = None) -> tuple[dict, list[dict]]:
    """Score in the sandbox and write results.jsonl, humaneval_log.yaml, report.md, pass_at_k.png."""
    from evaluation.humaneval.report import write_all
    from evaluation.humaneval.scoring import default_limits, score_samples
    from evaluation.humaneval.tasks import exclusions, graphviz_available

    info: dict = {}
    t0 = time.monotonic()
    results = score_samples(samples, args.variant, workers=args.workers, limits=default_limits(args.timeout),
                            progress=not args.no_progress, info=info, run_excluded=run_excluded)
    meta = {"sandbox_timeout_s": args.timeout, "score_seconds": round(time.monotonic() - t0, 2),
            "graphviz": graphviz_available(), "sandbox_isolation": info}
    meta.update(extra or {})
    if run_excluded:
        from evaluation.humaneval.scoring import CANONICAL_PASSED_MARK

        meta["excluded_but_passing"] = [r["task_id"] for r in results
                                        if str(r.get("error") or "").endswith(CANONICAL_PASSED_MARK)]
        meta["exclusions_known"] = len(exclusions())
    summary = write_all(args.out, results, args.variant, model=model, extra=meta)
    table = "  ".join(f"pass@{k} {v:.2f}%" for k, v in summary["pass_at"].items()) or "pass@k n/a"
    all_1 = summary["pass_at_all_tasks"].get(1)
    print(f"{model or args.out} ({args.variant}): {table}  over {summary['num_tasks_scored']} tasks "
          f"({len(summary['excluded'])} excluded; all tasks: pass@1 {'n/a' if all_1 is None else f'{all_1:.2f}%'}); "
          f"files in {args.out}")
    return summary, results


def _unscored_exit(summary: dict, request_errors: list[dict]) -> bool:
    """Judge errors and refused requests are no verdict on the model (left out of pass@k): each is
    reported on stderr, and any of them makes the command exit 2 (docs/humaneval.md)."""
    for e in request_errors:
        print(f"request error: {e['task_id']} sample {e['sample']}: {e['reason']}", file=sys.stderr)
    if summary.get("num_judge_errors"):
        print(f"error: {summary['num_judge_errors']} samples could not be judged (failure judge_error in "
              f"results.jsonl); they are left out of pass@k", file=sys.stderr)
    if request_errors:
        print(f"error: {len(request_errors)} requests were refused by the endpoint; they are not scored and "
              f"are listed in humaneval_log.yaml (request_errors)", file=sys.stderr)
    return bool(summary.get("num_judge_errors") or request_errors)


def _cmd_score(args) -> int:
    from evaluation.client import read_replies
    from evaluation.humaneval.report import write_jsonl
    from evaluation.humaneval.scoring import parse_samples, split_refused

    if not args.samples.is_file():
        print(f"error: {args.samples} not found", file=sys.stderr)
        return EXIT_ERROR
    try:
        records = read_replies(args.samples)
        if not records:
            raise ValueError(f"{args.samples} holds no samples")
        to_score, refused = split_refused(records)
        samples = parse_samples(to_score, args.variant)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    models = sorted({str(r["model"]) for r in records if r.get("model")})
    args.out.mkdir(parents=True, exist_ok=True)
    if args.samples.resolve() != (args.out / "samples.jsonl").resolve():
        write_jsonl(args.out / "samples.jsonl", records)
    summary, _ = _score_and_write(samples, args, model=", ".join(models) or None,
                                  extra={"samples_file": str(args.samples), "request_errors": refused})
    return EXIT_ERROR if _unscored_exit(summary, refused) else EXIT_OK


def _cmd_canonical(args) -> int:
    from evaluation.failures import EXCLUDED
    from evaluation.humaneval.report import write_jsonl
    from evaluation.humaneval.scoring import canonical_samples

    samples = canonical_samples(args.variant)
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "samples.jsonl", [{"task_id": s.task_id, "sample": s.sample, "completion": s.completion,
                                              "model": "canonical", "finish_reason": None} for s in samples])
    summary, results = _score_and_write(samples, args, model="canonical", run_excluded=True)
    failing = [r for r in results if not r["passed"] and r["failure"] != EXCLUDED]
    for r in failing:
        print(f"  canonical fails: {r['task_id']}: {r['failure']}: {r['error']}", file=sys.stderr)
    if _unscored_exit(summary, []):
        return EXIT_ERROR
    return EXIT_FAILED if failing else EXIT_OK


def _cmd_run(args) -> int:
    from evaluation.client import EndpointError, collect, preflight, read_replies
    from evaluation.humaneval.prompts import build_requests, sample_record
    from evaluation.humaneval.scoring import parse_samples, split_refused
    from evaluation.humaneval.tasks import load_tasks

    if args.samples < 1 or args.concurrency < 1 or args.max_tokens < 1 or (args.num_tasks is not None and args.num_tasks < 1):
        print("error: --samples, --concurrency, --max-tokens and --num-tasks must be >= 1", file=sys.stderr)
        return EXIT_ERROR
    key = args.api_key or os.environ.get("OPENAI_API_KEY") or os.environ.get("VLLM_API_KEY") or "EMPTY"
    try:
        preflight(args.base_url, key, [args.model])
    except EndpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    tasks = list(load_tasks(args.variant))[: args.num_tasks]
    requests = build_requests(tasks, args.variant, args.samples)
    path = args.out / "samples.jsonl"
    try:
        s = asyncio.run(collect(requests, base_url=args.base_url, model=args.model, api_key=key, out_path=path,
                                concurrency=args.concurrency, temperature=args.temperature, max_tokens=args.max_tokens,
                                seed=args.seed, request_timeout_s=args.request_timeout, max_retries=args.max_retries,
                                progress=not args.no_progress, resume=args.resume, api=args.api,
                                make_record=sample_record))
    except EndpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"interrupted: samples so far are in {path}; rerun with --resume", file=sys.stderr)
        return EXIT_ERROR
    wanted = {r.id for r in requests}
    # a resumed run re-sends refused requests (the later record counts); refusals are not scored
    to_score, refused = split_refused([r for r in read_replies(path) if r.get("id") in wanted])
    order = {r.id: i for i, r in enumerate(requests)}
    to_score.sort(key=lambda r: order[r["id"]])
    samples = parse_samples(to_score, args.variant)
    extra = {"endpoint": args.base_url, "api": args.api, "temperature": args.temperature, "max_tokens": args.max_tokens,
             "seed": args.seed, "concurrency": args.concurrency, "query_seconds": round(s.seconds, 2),
             "request_errors": refused,
             "finish_reasons": {str(k): v for k, v in _count(r.get("finish_reason") for r in to_score).items()}}
    summary, _ = _score_and_write(samples, args, model=args.model, extra=extra)
    return EXIT_ERROR if _unscored_exit(summary, refused) else EXIT_OK


def _count(values) -> dict:
    from collections import Counter

    return dict(Counter(values))


def main(args) -> int:
    from evaluation.sandbox import SandboxError

    if not args.timeout > 0 or (args.workers is not None and args.workers < 1):
        print("error: --timeout must be > 0 and --workers >= 1", file=sys.stderr)
        return EXIT_ERROR
    from evaluation.outdir import out_dir_problem

    problem = out_dir_problem(args.out)  # before any work: an unwritable --out is no failed solution
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_ERROR
    try:
        return {"run": _cmd_run, "score": _cmd_score, "canonical": _cmd_canonical}[args.humaneval_command](args)
    except SandboxError as exc:
        print(f"error: the sandbox failed, no verdicts: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # the disk or the file system failed mid-way: an environment error
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
