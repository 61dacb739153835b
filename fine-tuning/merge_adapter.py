"""Merge a trained LoRA/QLoRA adapter into its base model for vLLM (python fine-tuning/merge_adapter.py -h)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

try:
    from quantummind.envcheck import require
except ImportError:  # the seed's check_venv, for interpreters that lack the project entirely
    print(f"error: quantummind is not importable by {sys.executable}; run it with .venv/bin/python "
          "(create it with `make setup`)", file=sys.stderr)
    sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Merge the best checkpoint of an axolotl LoRA/QLoRA run (lowest eval_loss by default; "
        "--select-by reward or judge) into its base model, streaming one tensor at a time, and write a vLLM-ready model directory.",
    )
    p.add_argument("config", help="the axolotl YAML of the run (base_model, output_dir, adapter, bnb settings, "
                   "tokens come from it; relative paths resolve against the current directory)")
    p.add_argument("--checkpoint", default="best",
                   help="'best' (default: the best by --select-by), 'last' (highest step) or a checkpoint directory")
    p.add_argument("--select-by", choices=["eval_loss", "reward", "judge"], default="eval_loss",
                   help="what 'best' ranks: eval_loss (lowest, default: the seed's rule), reward (GRPO runs, which log "
                   "no eval_loss: the highest mean reward logged since the checkpoint before) or judge (what each "
                   "checkpoint writes: one vLLM server with every checkpoint as a LoRA adapter, `evaluation run` on "
                   "the same prompts for each; highest verification rate wins, ties by BP-free rate, then eval_loss; "
                   "costs --select-prompts x checkpoints generations; results in OUTPUT/selection/)")
    judge = p.add_argument_group("--select-by judge")
    judge.add_argument("--select-prompts", type=int, default=45, metavar="N",
                       help="prompts per checkpoint (default 45: each of the seed's 45 combinations once)")
    judge.add_argument("--select-seed", type=int, default=0, metavar="S",
                       help="sampling seed, the same for every checkpoint so replies pair by prompt (default 0)")
    judge.add_argument("--select-max-tokens", type=int, default=1024, metavar="T",
                       help="max tokens per reply (default 1024, as `evaluation run`)")
    p.add_argument("--output", help="output directory (default: fine-tuning/merged_models/<run name>, "
                   "run name = basename of output_dir)")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"],
                   help="dtype of the merged weights (default: the base model's)")
    p.add_argument("--max-shard-size", default="5GB", help="largest output shard, e.g. 5GB, 500MB (default 5GB)")
    p.add_argument("--no-qlora-faithful", action="store_true",
                   help="for QLoRA runs, add the delta to the original weights instead of to their 4-bit "
                   "round trip (the weights the adapter was trained against)")
    p.add_argument("--verify", action="store_true",
                   help="also load base+adapter with PEFT and the merged model with transformers and report "
                   "the max logit difference on a few prompts (slow for big models); exit 1 when it exceeds "
                   "--verify-tolerance (the merged model is still written, merge_report.json says verify.passed)")
    p.add_argument("--verify-tolerance", type=float, metavar="T",
                   help="largest accepted max |logit difference| for --verify (default by merged dtype: "
                   "1e-3 float32, 0.5 bfloat16, 0.1 float16)")
    served = p.add_argument_group("--check-served")
    served.add_argument("--check-served", action="store_true",
                        help="after the merge, serve the merged folder and (in turn) the base with the chosen checkpoint "
                        "as a LoRA adapter in vLLM, greedy-decode the same prompts through the OpenAI endpoint and compare "
                        "the generated token ids (merge_report.json: check_served); a 16-bit LoRA past --check-tolerance "
                        "exits 1 (the merged model stays written); QLoRA differs by design and is only reported")
    served.add_argument("--check-prompts", type=int, default=8, metavar="K", help="prompts to decode (default 8)")
    served.add_argument("--check-max-tokens", type=int, default=64, metavar="T",
                        help="greedy tokens per prompt (default 64)")
    served.add_argument("--check-tolerance", type=float, metavar="X",
                        help="largest accepted 1 - mean token agreement (default by merged dtype: 0.02 float32, "
                        "0.25 bfloat16/float16)")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier merge's output (a folder holding merge_report.json), only after "
                   "the new merge succeeded; never a folder that is, holds or lies inside an input (base "
                   "model, output_dir, checkpoint, config, dataset), the working directory, a home or a root")
    p.add_argument("--allow-vocab-shrink", action="store_true",
                   help="accept a trained vocabulary smaller than the base embedding")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors and the final line")
    return p


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verify_tolerance is not None and not args.verify:
        parser.error("--verify-tolerance needs --verify")
    def changed(*dests: str) -> list[str]:  # the given options set to other than their defaults
        return [f"--{d.replace('_', '-')}" for d in dests if getattr(args, d) != parser.get_default(d)]

    judge_flags = changed("select_prompts", "select_seed", "select_max_tokens")
    if judge_flags and args.select_by != "judge":
        parser.error(f"{', '.join(judge_flags)} need --select-by judge")
    if args.select_prompts < 1 or args.select_max_tokens < 1:
        parser.error("--select-prompts and --select-max-tokens must be >= 1")
    check_flags = changed("check_prompts", "check_max_tokens", "check_tolerance")
    if check_flags and not args.check_served:
        parser.error(f"{', '.join(check_flags)} need --check-served")
    if args.check_prompts < 1 or args.check_max_tokens < 1:
        parser.error("--check-prompts and --check-max-tokens must be >= 1")
    if args.check_tolerance is not None and not 0 <= args.check_tolerance <= 1:
        parser.error("--check-tolerance must be in [0, 1]")
    require("torch", "yaml")
    from quantummind.merge import MergeError, merge
    from quantummind.merge.judge_select import JudgeOptions
    from quantummind.merge.served_check import CheckOptions, describe

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request to the check's servers otherwise
    # SIGTERM cleans up like Ctrl-C: the partial output is removed before exit.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = merge(
            args.config, checkpoint=args.checkpoint, output=args.output, dtype=args.dtype,
            max_shard_size=args.max_shard_size, qlora_faithful=not args.no_qlora_faithful,
            verify=args.verify, verify_tolerance=args.verify_tolerance, force=args.force,
            allow_vocab_shrink=args.allow_vocab_shrink, select_by=args.select_by,
            judge=JudgeOptions(prompts=args.select_prompts, seed=args.select_seed, max_tokens=args.select_max_tokens),
            check_served=CheckOptions(prompts=args.check_prompts, max_tokens=args.check_max_tokens,
                                      tolerance=args.check_tolerance) if args.check_served else None,
        )
    except (MergeError, ValueError) as exc:  # bad input: usage (exit 2; 1 is a failed --verify)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the disk or the file system, not the model
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no output written", file=sys.stderr)
        return 130
    r = result.report
    if "verify" in r:
        v = r["verify"]
        diff = "nan" if v["max_abs_logit_diff"] is None else f"{v['max_abs_logit_diff']:.3g}"
        print(f"verify: max |logit diff| = {diff} (tolerance {v['tolerance']:.3g}; reference: {v['reference']})")
    warned = f", {len(r['warnings'])} warning(s) in merge_report.json" if r["warnings"] else ""
    chosen_by = f"eval_loss {r['eval_loss']}"
    if r.get("select_by") == "reward":
        chosen_by = f"reward {r['reward']:.4f}, selected by reward"
    elif r.get("judge_selection"):
        j = r["judge_selection"]
        won = next(c for c in j["checkpoints"] if c["checkpoint"] == j["winner"])
        chosen_by = (f"verification {won['verification']['rate']} % of {won['verification']['n']}, selected by the "
                     f"judge; report: {result.output / j['report']}")
    print(f"merged {r['checkpoint']} ({chosen_by}) -> {result.output} "
          f"[{len(r['shards'])} shard(s), {r['dtype']}, {r['seconds']} s, peak RSS {r['peak_rss_bytes'] / 2**20:.0f} MiB"
          f"{warned}]")
    if "check_served" in r:
        print(describe(r["check_served"]))
    if result.check_served_failed:
        print(f"error: check-served failed: the served adapter and the merged model disagree past the tolerance "
              f"(the merged model is in {result.output}; see merge_report.json check_served)", file=sys.stderr)
        return 1
    if result.verify_failed:
        print(f"error: verify failed: max |logit diff| {diff} > tolerance {r['verify']['tolerance']:.3g} "
              f"(the merged model is in {result.output}; see its merge_report.json)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
