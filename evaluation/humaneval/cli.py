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
    g.add_argument("--timeout", "--sandbox-timeout", dest="timeout", type=float, default=None,
                   help="wall-clock seconds per program, for every task (default: per task, max(30, 4 x the canonical "
                        "solution's time measured by `canonical` on this machine and stack); 30 without such times; "
                        "canonical itself: 300; --sandbox-timeout, the circuit commands' name, works too)")
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
    missing = _missing_modules(samples)
    base, per_task, rule = _time_limits(args, canonical=run_excluded)
    t0 = time.monotonic()
    results = score_samples(samples, args.variant, workers=args.workers, limits=default_limits(base),
                            progress=not args.no_progress, info=info, run_excluded=run_excluded,
                            task_timeouts=per_task)
    if run_excluded:
        from evaluation.humaneval.timeouts import save_canonical_times

        print(f"canonical times saved for this machine and stack: {save_canonical_times(results, args.variant)}",
              file=sys.stderr)
    meta = {"sandbox_timeout_s": base, "timeout_rule": rule, "task_timeouts_s": per_task or {},
            "score_seconds": round(time.monotonic() - t0, 2),
            "missing_modules": missing,
            "graphviz": graphviz_available(), "sandbox_isolation": info}
    meta.update(extra or {})
    if run_excluded:
        from evaluation.humaneval.scoring import CANONICAL_PASSED_MARK

        meta["excluded_but_passing"] = [r["task_id"] for r in results
                                        if str(r.get("error") or "").endswith(CANONICAL_PASSED_MARK)]
        meta["exclusions_known"] = len(exclusions())
    summary = write_all(args.out, results, args.variant, model=model, extra=meta)
    table = "  ".join(f"pass@{k} {v:.2f}%" for k, v in summary["pass_at"].items()) or "pass@k n/a"
    for k, why in summary.get("pass_at_omitted", {}).items():
        print(f"warning: pass@{k} not reported: {why}", file=sys.stderr)
    all_1 = summary["pass_at_all_tasks"].get(1)
    print(f"{model or args.out} ({args.variant}): {table}  over {summary['num_tasks_scored']} tasks "
          f"({len(summary['excluded'])} excluded; all tasks: pass@1 {'n/a' if all_1 is None else f'{all_1:.2f}%'}); "
          f"files in {args.out}")
    return summary, results


def _time_limits(args, canonical: bool) -> tuple[float, dict[str, float] | None, str]:
    """(the limit for every task, task_id -> a larger limit, the rule in words), said on stderr."""
    from evaluation.humaneval.timeouts import BASE_S, FACTOR, bucket, cache_path, task_limits

    if args.timeout is not None:
        rule = f"--timeout {args.timeout:g} s for every task"
        per_task = None
        base = args.timeout
    elif canonical:
        base, per_task, rule = 10 * BASE_S, None, f"{10 * BASE_S:g} s for every task (canonical measures the times)"
    else:
        limits = task_limits(args.variant)
        base = BASE_S
        if limits is None:
            per_task = None
            rule = (f"{BASE_S:g} s for every task: no canonical times for this machine and stack in {cache_path()} "
                    f"(run `humaneval canonical` once to measure them)")
        else:
            per_task = {t: bucket(v) for t, v in limits.items() if v > BASE_S}
            rule = (f"per task: max({BASE_S:g} s, {FACTOR:g} x the canonical time on this machine and stack); "
                    f"{len(per_task)} task(s) above {BASE_S:g} s")
    print(f"time limits: {rule}", file=sys.stderr)
    return base, per_task, rule


def _missing_modules(samples) -> dict[str, list[str]]:
    """The modules the scored tasks import that this install lacks (missing_task_modules), each warned
    about on stderr: their tasks fail as `missing_module` whatever the model wrote."""
    from evaluation.humaneval.judge import missing_task_modules
    from evaluation.humaneval.tasks import exclusions

    wanted = {s.task_id for s in samples}
    out = {m: [t for t in tids if t in wanted] for m, tids in missing_task_modules(exclusions()).items()}
    out = {m: tids for m, tids in out.items() if tids}
    for module, tids in out.items():
        print(f"warning: {module} cannot be imported here; {len(tids)} task(s) will fail as missing_module "
              f"whatever the completion ({', '.join(tids[:5])}{', ...' if len(tids) > 5 else ''}); "
              f"install the eval extra (pip install -e '.[eval]')", file=sys.stderr)
    return out


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

    from evaluation.humaneval.judge import missing_task_modules
    from evaluation.humaneval.tasks import exclusions

    missing = missing_task_modules(exclusions())
    if missing:  # a canonical check on an incomplete install would blame the dataset
        print(f"error: this install cannot import {', '.join(missing)} (needed by "
              f"{len(set().union(*missing.values()))} tasks that are not excluded); install the eval extra "
              f"(pip install -e '.[eval]') and rerun", file=sys.stderr)
        return EXIT_ERROR
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

    if (args.timeout is not None and not args.timeout > 0) or (args.workers is not None and args.workers < 1):
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
