"""`python -m evaluation run|score|compare` (exit 0: targets met, 1: not met, 2: usage/connection error,
or replies that could not be scored: more judge errors than --max-judge-errors, or any request error)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from pathlib import Path

from evaluation.defaults import BP_RULE, BP_RULES, BP_VARIANCE_THRESHOLD
from evaluation.report import Thresholds

EXIT_OK, EXIT_TARGETS_MISSED, EXIT_ERROR = 0, 1, 2


def _add_scoring_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scoring")
    g.add_argument("--min-syntax", type=float, default=95.0, help="syntax-valid target, percent (met when strictly above; default 95)")
    g.add_argument("--min-verification", type=float, default=80.0, help="verification-pass target, percent (default 80)")
    g.add_argument("--min-bp-free", type=float, default=60.0, help="BP-free target, percent (default 60)")
    g.add_argument("--workers", type=int, default=None, help="replies executed at once in the sandbox (default: CPU count)")
    g.add_argument("--sandbox-timeout", "--timeout", dest="sandbox_timeout", type=float, default=20.0,
                   help="wall-clock seconds each reply's code may run (default 20; --timeout, the HumanEval "
                        "commands' name, works too)")
    g.add_argument("--judge-timeout", type=float, default=60.0,
                   help="wall-clock seconds the judge may take per reply after its code ran (QPY, verification, BP, "
                        "VQE); past it the reply is a judge error (default 60)")
    g.add_argument("--max-judge-errors", type=int, default=0,
                   help="replies the judge could not decide (listed as judge_errors in validation_log.yaml, left "
                        "out of every rate) tolerated before the command exits 2 (default 0)")
    g.add_argument("--bp-threshold", type=float, default=None,
                   help="rule absolute: mean gradient variance below which a circuit has a barren plateau (default 1e-3)")
    g.add_argument("--bp-rule", choices=BP_RULES, default=BP_RULE,
                   help="barren-plateau verdict: 'scaling' (default: variance and its decay with n against a unitary "
                        "2-design's, docs/evaluation.md) or 'absolute' (the seed's: variance < --bp-threshold)")
    g.add_argument("--bp-seed", type=int, default=0,
                   help="seed of the barren-plateau check's parameter samples and of its bootstrap (default 0); "
                        "recorded in validation_log.yaml")
    g.add_argument("--vqe", action="store_true", help="also run a short VQE per verified circuit and record energy_error")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="query an OpenAI-compatible server, then score every reply",
                         description="Query the served model(s) with the seed's prompts, save each reply as it arrives "
                                     "(DIR/replies.jsonl), then score: results.jsonl, validation_log.yaml, report.md, PNGs.")
    run.add_argument("--base-url", required=True, help="OpenAI API base URL, e.g. http://127.0.0.1:8000/v1")
    run.add_argument("--model", action="append", required=True,
                     help="served model name; give it twice (base, then fine-tuned) to evaluate both into "
                          "DIR/<model>/ and compare them in DIR/comparison/")
    run.add_argument("--api-key", default=None, help="API key (default: $OPENAI_API_KEY, then $VLLM_API_KEY, then 'EMPTY')")
    run.add_argument("--num-tests", "--num-tasks", dest="num_tests", type=int, default=45,
                     help="number of prompts (default 45: each of the 45 combinations once); above 45 the combinations "
                          "repeat, which adds replies but not independent prompts (compare then tests per prompt); "
                          "--num-tasks, the HumanEval name, works too")
    run.add_argument("--concurrency", type=int, default=16, help="requests in flight at once (default 16)")
    run.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default 0.7)")
    run.add_argument("--max-tokens", type=int, default=1024, help="max tokens per reply (default 1024)")
    run.add_argument("--seed", type=int, default=None, help="base sampling seed; request i uses seed+i (default: none)")
    run.add_argument("--out", type=Path, required=True, help="output directory")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run: only prompts missing from replies.jsonl (or refused "
                          "with a 4xx) are sent")
    run.add_argument("--request-timeout", type=float, default=300.0, help="seconds per request before the client retries (default 300)")
    run.add_argument("--max-retries", type=int, default=3, help="client retries on connection errors, 429 and 5xx (default 3)")
    _add_scoring_flags(run)

    score = sub.add_parser("score", help="score a saved replies.jsonl (no server needed)",
                           description="Score saved replies: results.jsonl, validation_log.yaml, report.md, PNGs in --out.")
    score.add_argument("replies", type=Path, metavar="REPLIES.jsonl", help="replies file (fields: id, hamiltonian, num_qubits, constraint, reply; prompt optional)")
    score.add_argument("--out", type=Path, required=True, help="output directory")
    _add_scoring_flags(score)

    comp = sub.add_parser("compare", help="base vs fine-tuned side by side, with paired statistics",
                          description="Compare two evaluated directories (A = base, B = fine-tuned): two circuit "
                                      "runs (run/score) or two HumanEval runs (humaneval_log.yaml). Rates with 95 % "
                                      "Wilson intervals and the exact McNemar test on replies paired by id; for "
                                      "HumanEval, per-task pass@1 paired by task_id with a bootstrap interval. "
                                      "Exit 0 iff B verifies more circuits than A (HumanEval: higher pass@1), "
                                      "1 otherwise, 2 on bad input.")
    comp.add_argument("dir_a", type=Path, metavar="DIR_A", help="base model's output directory")
    comp.add_argument("dir_b", type=Path, metavar="DIR_B", help="fine-tuned model's output directory")
    comp.add_argument("--out", type=Path, required=True, help="output directory for report.md, comparison.png, comparison.yaml")
    comp.add_argument("--require-significant", action="store_true",
                      help="exit 0 only when B is better and the paired test says so too (p < 0.05)")

    from evaluation.humaneval.cli import add_parser as add_humaneval_parser

    add_humaneval_parser(sub)
    return ap


def _thresholds(args) -> Thresholds:
    return Thresholds(syntax=args.min_syntax, verification=args.min_verification, bp_free=args.min_bp_free)


def _check_scoring_flags(args) -> str | None:
    """A usage error message, or None."""
    import math

    for flag, value in (("--min-syntax", args.min_syntax), ("--min-verification", args.min_verification),
                        ("--min-bp-free", args.min_bp_free), ("--sandbox-timeout", args.sandbox_timeout),
                        ("--judge-timeout", args.judge_timeout)):
        if not math.isfinite(value):
            return f"{flag} must be a finite number"
    if args.bp_threshold is not None and not (math.isfinite(args.bp_threshold) and args.bp_threshold > 0):
        return "--bp-threshold must be a finite number > 0"
    if args.sandbox_timeout <= 0 or args.judge_timeout <= 0:
        return "--sandbox-timeout and --judge-timeout must be > 0"
    if args.max_judge_errors < 0:
        return "--max-judge-errors must be >= 0"
    return None


def _out_problem(out: Path) -> bool:
    """True (after one line on stderr) when --out cannot be written: checked before the work starts."""
    from evaluation.outdir import out_dir_problem

    problem = out_dir_problem(out)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
    return problem is not None


def _unscored_exit(summaries: list[dict], args) -> bool:
    """Report every reply that could not be scored on stderr; True if the command must exit 2."""
    bad = False
    for s in summaries:
        for key, what in (("judge_errors", "judge error"), ("request_errors", "request error")):
            for e in s[key]:
                print(f"{what}: {e['id']}: {e['reason']}", file=sys.stderr)
        if len(s["judge_errors"]) > args.max_judge_errors:
            print(f"error: {len(s['judge_errors'])} replies could not be judged (--max-judge-errors "
                  f"{args.max_judge_errors}); they are left out of the rates and listed in validation_log.yaml",
                  file=sys.stderr)
            bad = True
        if s["request_errors"]:
            print(f"error: {len(s['request_errors'])} requests were refused by the endpoint; they are not scored "
                  f"and are listed in validation_log.yaml", file=sys.stderr)
            bad = True
    return bad


def _bp_basis_counts(results: list[dict]) -> dict[str, int]:
    """How many verified replies' bp_free was decided by each basis (flat, scaling, ratio, undecided, absolute)."""
    from evaluation.report import scored

    counts: dict[str, int] = {}
    for r in filter(scored, results):  # as the rates: judge and request errors have no verdict
        if r.get("bp_basis"):
            counts[str(r["bp_basis"])] = counts.get(str(r["bp_basis"]), 0) + 1
    return dict(sorted(counts.items()))


def _score_and_report(records: list[dict], out: Path, args, *, model: str | None, endpoint: str | None,
                      extra: dict | None = None) -> dict:
    from evaluation.report import summarize, write_report, write_results, write_validation_log
    from evaluation.sandbox import SandboxLimits
    from evaluation.scoring import score_replies

    info: dict = {}
    limits = SandboxLimits(timeout_s=args.sandbox_timeout, judge_timeout_s=args.judge_timeout)
    results = score_replies(records, workers=args.workers, vqe=args.vqe, progress=not args.no_progress,
                            limits=limits, bp_threshold=args.bp_threshold, info=info, bp_rule=args.bp_rule,
                            seed=args.bp_seed)
    th = _thresholds(args)
    summary = summarize(results, th)
    out.mkdir(parents=True, exist_ok=True)
    write_results(out, results)
    bp_threshold = args.bp_threshold if args.bp_threshold is not None else BP_VARIANCE_THRESHOLD
    meta = {"bp_rule": args.bp_rule, "bp_seed": args.bp_seed, "bp_basis_counts": _bp_basis_counts(results),
            "bp_threshold": bp_threshold, "sandbox_timeout_s": args.sandbox_timeout,
            "judge_timeout_s": args.judge_timeout, "max_judge_errors": args.max_judge_errors,
            "vqe": bool(args.vqe), "sandbox_isolation": info}
    meta.update(extra or {})
    write_validation_log(out, summary, model=model, endpoint=endpoint, thresholds=th, extra=meta)
    write_report(out, summary, th, model=model, endpoint=endpoint)
    from evaluation.report import fmt_rate, result_words

    unscored = len(summary["judge_errors"]) + len(summary["request_errors"])
    print(f"{model or out}: syntax {fmt_rate(summary['syntax_rate'])}%  verification {fmt_rate(summary['verification_rate'])}%  "
          f"BP-free {fmt_rate(summary['bp_free_rate'])}% (BP undecided {summary['bp_undecided']})  "
          f"({summary['num_tests']} replies scored"
          f"{f', {unscored} not scored' if unscored else ''}) -> "
          f"{result_words(summary) if summary['judge_errors'] or summary['passed'] else 'targets not met'}; "
          f"files in {out}")
    return summary


def _cmd_score(args) -> int:
    from evaluation.client import latest_by_id, read_replies

    problem = _check_scoring_flags(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_ERROR
    if not args.replies.is_file():
        print(f"error: {args.replies} not found", file=sys.stderr)
        return EXIT_ERROR
    if _out_problem(args.out):
        return EXIT_ERROR
    try:
        records = latest_by_id(read_replies(args.replies))
        if not records:
            raise ValueError(f"{args.replies} holds no replies")
        models = sorted({str(r.get("model")) for r in records if r.get("model")})
        summary = _score_and_report(records, args.out, args, model=", ".join(models) or None, endpoint=None,
                                    extra={"replies_file": str(args.replies)})
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if _unscored_exit([summary], args):
        return EXIT_ERROR
    return EXIT_OK if summary["passed"] else EXIT_TARGETS_MISSED


def _safe_dirname(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("._") or "model"


def _cmd_run(args) -> int:
    from evaluation.client import EndpointError, collect, latest_by_id, preflight, read_replies
    from evaluation.prompts import build_prompts
    from evaluation.comparison import format_comparison, write_comparison

    if args.num_tests < 1 or args.concurrency < 1 or args.max_tokens < 1:
        print("error: --num-tests, --concurrency and --max-tokens must be >= 1", file=sys.stderr)
        return EXIT_ERROR
    problem = _check_scoring_flags(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_ERROR
    if len(args.model) > 2 or len(set(args.model)) != len(args.model):
        print("error: give --model once, or twice with two different names", file=sys.stderr)
        return EXIT_ERROR
    if _out_problem(args.out):
        return EXIT_ERROR
    key = args.api_key or os.environ.get("OPENAI_API_KEY") or os.environ.get("VLLM_API_KEY") or "EMPTY"
    try:
        preflight(args.base_url, key, args.model)
    except EndpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    prompts = build_prompts(args.num_tests)
    dirs = [args.out] if len(args.model) == 1 else [args.out / _safe_dirname(m) for m in args.model]
    summaries = []
    for model, out in zip(args.model, dirs):
        replies = out / "replies.jsonl"
        try:
            s = asyncio.run(collect(prompts, base_url=args.base_url, model=model, api_key=key, out_path=replies,
                                    concurrency=args.concurrency, temperature=args.temperature,
                                    max_tokens=args.max_tokens, seed=args.seed, request_timeout_s=args.request_timeout,
                                    max_retries=args.max_retries, progress=not args.no_progress, resume=args.resume))
        except EndpointError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt:
            print(f"interrupted: replies so far are in {replies}; rerun with --resume", file=sys.stderr)
            return EXIT_ERROR
        wanted = {p.id for p in prompts}
        records = [r for r in latest_by_id(read_replies(replies)) if r.get("id") in wanted]
        extra = {"num_requested": args.num_tests, "temperature": args.temperature, "max_tokens": args.max_tokens,
                 "seed": args.seed, "concurrency": args.concurrency, "query_seconds": round(s.seconds, 2)}
        summaries.append(_score_and_report(records, out, args, model=model, endpoint=args.base_url, extra=extra))
    if len(dirs) == 2:
        comp = write_comparison(dirs[0], dirs[1], args.out / "comparison", labels=tuple(args.model))
        for warning in comp.get("warnings", []):
            print(f"warning: {warning}", file=sys.stderr)
        print(f"comparison (A = {args.model[0]}, B = {args.model[1]}):\n{format_comparison(comp)}\n"
              f"written to {args.out / 'comparison'}")
    if _unscored_exit(summaries, args):
        return EXIT_ERROR
    return EXIT_OK if all(s["passed"] for s in summaries) else EXIT_TARGETS_MISSED


def _cmd_compare(args) -> int:
    from evaluation.comparison import b_wins, format_comparison, write_comparison

    if _out_problem(args.out):
        return EXIT_ERROR
    try:
        comp = write_comparison(args.dir_a, args.dir_b, args.out)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for warning in comp.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    print(format_comparison(comp))
    print(f"written to {args.out}")
    return EXIT_OK if b_wins(comp, require_significant=args.require_significant) else EXIT_TARGETS_MISSED


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EXIT_ERROR if exc.code else EXIT_OK
    if args.command == "humaneval":
        from evaluation.humaneval.cli import main as humaneval_main

        return humaneval_main(args)
    handler = {"run": _cmd_run, "score": _cmd_score, "compare": _cmd_compare}[args.command]
    try:
        return handler(args)
    except OSError as exc:  # the disk or the file system failed mid-way: an environment error
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
