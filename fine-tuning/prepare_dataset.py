"""Generate the verified Qiskit chat dataset: train.jsonl, val.jsonl, dataset_card.md.

Every example is executed in the evaluation sandbox (evaluation.scoring.score_replies) and kept
only if it passes the verifier and the barren-plateau check; evaluation prompts are excluded. The card
also reports the 13-gram overlap with Qiskit HumanEval's prompts and canonical solutions (0 expected).

--rl writes prompt-only rows for GRPO instead (train.jsonl, val.jsonl: `prompt` chat messages +
`hamiltonian`, `num_qubits`, `constraint`, `family`), drawn over every family, 2-10 qubits, every
constraint and phrasing, with the evaluation's prompts removed; nothing is executed (the reward judges).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from quantummind.training.dataset import DEFAULT_NUM_EXAMPLES, generate_dataset, generate_rl_prompts

DEFAULT_RL_PROMPTS = 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path,
                        help="output directory (created); receives train.jsonl, val.jsonl, dataset_card.md")
    parser.add_argument("--rl", action="store_true",
                        help="write prompt-only rows for GRPO (prompt, hamiltonian, num_qubits, constraint); "
                             f"--num-examples then counts prompts (default {DEFAULT_RL_PROMPTS})")
    parser.add_argument("--num-examples", type=int, default=None,
                        help=f"examples to keep after verification, train + val (default {DEFAULT_NUM_EXAMPLES}: "
                             "1069 optimizer steps over 3 epochs at batch 16 without sample packing; with packing far "
                             "fewer: `train.py steps CONFIG` counts them)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default 0)")
    parser.add_argument("--style", choices=("full", "simple"), default="full",
                        help="full: 5 Hamiltonian families, 4 ansatz families, 4 code styles, 11 constraints; "
                             "simple: one short RY-CX template (for the tiny CPU demo model)")
    parser.add_argument("--val-fraction", type=float, default=0.05,
                        help="share of examples in val.jsonl, chosen by content hash (default 0.05; at least 1)")
    parser.add_argument("--workers", type=int, default=None,
                        help="verifier worker processes (default: the evaluation package's choice)")
    args = parser.parse_args(argv)
    if args.num_examples is None:
        args.num_examples = DEFAULT_RL_PROMPTS if args.rl else DEFAULT_NUM_EXAMPLES
    if args.num_examples < 2:
        parser.error("--num-examples must be >= 2")
    if not 0 < args.val_fraction < 1:
        parser.error("--val-fraction must be between 0 and 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.rl:
        if args.style != "full":
            parser.error("--style applies to the SFT set, not to --rl prompts")
        try:
            rl = generate_rl_prompts(args.out, args.num_examples, args.seed, val_fraction=args.val_fraction)
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {rl.num_train} train + {rl.num_val} val RL prompts to {args.out} (of {rl.candidates} "
              f"candidates; {rl.decontaminated} removed as evaluation prompts, overlap {rl.eval_prompt_overlap})")
        return 0
    try:
        report = generate_dataset(args.out, args.num_examples, args.seed, style=args.style,
                                  val_fraction=args.val_fraction, workers=args.workers)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {report.num_train} train + {report.num_val} val examples to {args.out} "
          f"({report.rejected} rejected by the verifier, {report.decontaminated} removed as evaluation "
          f"prompts, overlap {report.eval_prompt_overlap}; HumanEval {report.humaneval.get('ngram')}-gram overlap: "
          f"{report.humaneval.get('texts_with_overlap')} examples); see {args.out / 'dataset_card.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
