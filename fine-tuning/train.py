"""QuantumMind training wrapper around axolotl: lint, train, verify.

  lint   CONFIG            offline preflight checks (exit 1 on errors, 0 with warnings only)
  train  CONFIG [ARGS...]  lint (report printed first; errors stop it), then
                           `accelerate launch -m axolotl.cli.train CONFIG ARGS...`,
                           then training_log.yaml + loss_curve.png in output_dir (GRPO configs,
                           `rl: grpo`: + the reward per logging step and reward_curve.png)
  verify CONFIG            load base + best adapter, generate for the seed's 4-qubit XY-chain
                           prompt, score the reply with the evaluation verifier (exit 1 on FAIL)
  steps  CONFIG            optimizer steps the run will take, sample packing counted as axolotl
                           does (tokenizes the train set with the base model's tokenizer)

Plain `accelerate launch -m axolotl.cli.train CONFIG` works on every config; this adds, it is
never required. Run from the repository root: config paths resolve against the CWD, as in axolotl.
"""

from __future__ import annotations

import argparse
import logging
import sys

from quantummind.training.config import ConfigError, load_config


def _lint(args: argparse.Namespace) -> int:
    from quantummind.training.lint import format_report, lint_config, report_json

    cfg = load_config(args.config)
    report = lint_config(cfg, device=args.device)
    print(report_json(report) if args.json else format_report(report, args.config))
    return report.exit_code


def _train(args: argparse.Namespace) -> int:
    from quantummind.training.training_log import LOSS_WARNING_THRESHOLD
    from quantummind.training.wrapper import train

    cfg = load_config(args.config)
    # the lint report is printed before anything is launched (and nothing is, on errors)
    result = train(args.config, cfg, args.extra, num_processes=args.num_processes, device=args.device)
    if result.lint.errors:
        print("error: lint failed; nothing was trained (fix the errors above)", file=sys.stderr)
        return 1
    if result.returncode != 0:
        print(f"error: axolotl exited with status {result.returncode}", file=sys.stderr)
        return result.returncode
    log = result.log or {}
    print(f"training log: {result.log_path}\nloss curve:   {result.plot_path}")
    if log.get("rl") == "grpo":
        print(f"reward curve: {result.reward_plot_path}")
        print(f"reward mean: first {log.get('first_reward_mean')} final {log.get('final_reward_mean')} "
              f"max {log.get('max_reward_mean')} over {len(log.get('rewards') or [])} logging steps "
              f"({', '.join(log.get('reward_funcs') or [])}); GRPO has no eval_loss: merge with --select-by reward")
        return 0
    print(f"final_train_loss={log.get('final_train_loss')} best_eval_loss={log.get('best_eval_loss')} "
          f"at step {log.get('best_step')} ({log.get('best_checkpoint')})")
    loss = log.get("final_train_loss")
    if loss is None or loss >= LOSS_WARNING_THRESHOLD:
        print(f"WARNING: Training loss >= {LOSS_WARNING_THRESHOLD} ({loss}), model may be undertrained")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from quantummind.training.verify import verify

    if args.max_new_tokens < 1 or not args.temperature >= 0:
        print("error: --max-new-tokens must be >= 1 and --temperature >= 0", file=sys.stderr)
        return 2
    cfg = load_config(args.config)
    result = verify(cfg, checkpoint=args.checkpoint, max_new_tokens=args.max_new_tokens,
                    temperature=args.temperature, seed=args.seed)
    loss = f" (eval_loss {result.eval_loss:.4f})" if result.eval_loss is not None else ""
    print(f"checkpoint: {result.checkpoint}{loss}\nprompt: {result.prompt}\n--- reply ---\n{result.reply}\n---")
    print(result.verdict())
    return 0 if result.passed else 1


def _steps(args: argparse.Namespace) -> int:
    import json

    from quantummind.training.steps import count_steps

    cfg = load_config(args.config)
    tokenizer = args.tokenizer or cfg.get("tokenizer_config") or cfg["base_model"]
    try:
        count = count_steps(cfg, tokenizer)
    except (OSError, ValueError) as exc:  # no such tokenizer (offline, not cached), bad data
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FileNotFoundError(f"cannot count steps with tokenizer {tokenizer}: {first}; without network, "
                                "pass --tokenizer DIR (a local tokenizer directory, e.g. a downloaded copy of "
                                "the base model; another model's tokenizer gives an estimate)") from None
    if args.json:
        print(json.dumps(count.to_json(), indent=2))
        return 0
    packing = (f"packed into {count.packed_sequences} sequences (efficiency {count.packing_efficiency:.2f})"
               if count.sample_packing else "no sample packing")
    print(f"{count.examples} train examples ({count.dropped_long} longer than sequence_len, dropped), "
          f"{count.total_tokens} tokens, mean {count.mean_tokens}, {count.chars_per_token} chars/token "
          f"[tokenizer {count.tokenizer}]; {packing}")
    print(f"optimizer steps: {count.steps_per_epoch} per epoch, {count.total_steps} over {count.num_epochs:g} epochs")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("lint", help="offline preflight checks of an axolotl config")
    p.add_argument("config", help="axolotl YAML")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                   help="where the run will happen: cpu checks the CPU keys; auto = gpu if one is visible "
                        "or the config has GPU-only keys, else cpu (default auto)")
    p.add_argument("--json", action="store_true", help="print findings and the memory estimate as JSON")
    p.set_defaults(func=_lint)
    p = sub.add_parser("train", help="lint, then accelerate launch -m axolotl.cli.train CONFIG ARGS...")
    p.add_argument("config", help="axolotl YAML")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                   help="as for lint (the same decision, the same report): auto = gpu if one is visible or the "
                        "config has GPU-only keys, else cpu; a GPU config is not launched on a host without a GPU")
    p.add_argument("--num-processes", type=int, default=1,
                   help="data-parallel processes for accelerate launch (--multi_gpu; on a CPU host "
                        "ACCELERATE_USE_CPU=true is set). Default 1")
    p.add_argument("extra", nargs=argparse.REMAINDER,
                   help="passed through to axolotl after CONFIG (e.g. --learning_rate 1e-4)")
    p.set_defaults(func=_train)
    p = sub.add_parser("verify", help="generate for the seed's XY-chain prompt and score the reply")
    p.add_argument("config", help="axolotl YAML of the trained run (its output_dir holds the checkpoints)")
    p.add_argument("--checkpoint", default="best",
                   help="best (lowest eval_loss), last, or a checkpoint directory (default best)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="generation length (default 512, seed)")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature; 0 = greedy (default 0.7, seed)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.set_defaults(func=_verify)
    p = sub.add_parser("steps", help="optimizer steps of the run, sample packing counted as axolotl does")
    p.add_argument("config", help="axolotl YAML (its datasets must exist)")
    p.add_argument("--tokenizer", help="tokenizer directory or cached hub id (default: the config's "
                   "tokenizer_config, else base_model); another model's tokenizer gives an estimate")
    p.add_argument("--json", action="store_true", help="print the count as JSON")
    p.set_defaults(func=_steps)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
