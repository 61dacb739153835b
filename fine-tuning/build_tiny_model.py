#!/usr/bin/env python
"""Build the tiny local Qwen2 model (or a large sharded synthetic one) fully offline.

Examples:
  python fine-tuning/build_tiny_model.py                      # -> build/tiny-qwen2
  python fine-tuning/build_tiny_model.py --out /tmp/tiny --seed 1 --tied
  python fine-tuning/build_tiny_model.py --synthetic-gb 1.6 --shards 3 --out build/synthetic-1.6gb
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from quantummind.paths import TINY_MODEL_DIR


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None,
                    help=f"output directory (default: {TINY_MODEL_DIR} for the tiny model)")
    ap.add_argument("--seed", type=int, default=0, help="random seed for weights (default 0)")
    ap.add_argument("--tied", action="store_true", help="tie embed_tokens and lm_head")
    ap.add_argument("--layers", type=int, default=None, help="decoder layers of the tiny model (default 2)")
    ap.add_argument("--force", action="store_true", help="rebuild even if an identical build is present")
    ap.add_argument("--synthetic-gb", type=float, default=None,
                    help="instead build a random Qwen2-shaped bf16 model of about this many GB (merge benchmark)")
    ap.add_argument("--shards", type=int, default=3, help="number of safetensors shards for --synthetic-gb (default 3)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from quantummind import tiny_model  # torch/transformers import after --help

    if args.synthetic_gb is not None:
        if args.out is None:
            ap.error("--synthetic-gb needs --out")
        if args.synthetic_gb <= 0 or args.shards < 1:
            ap.error("--synthetic-gb must be > 0 and --shards >= 1")
        m = tiny_model.build_synthetic_model(args.out, size_gb=args.synthetic_gb, num_shards=args.shards, seed=args.seed)
        print(f"{m.path}: {m.num_parameters:,} parameters in {m.num_shards} shards, "
              f"largest {m.largest_shard_bytes / 2**20:.0f} MiB")
        return 0

    spec = tiny_model.TinyModelSpec(tie_word_embeddings=args.tied)
    if args.layers is not None:
        spec = tiny_model.TinyModelSpec(tie_word_embeddings=args.tied, num_hidden_layers=args.layers)
    out = args.out or TINY_MODEL_DIR
    if not args.force and tiny_model.is_current_build(out, seed=args.seed, spec=spec):
        print(f"{out}: up to date")
        return 0
    tiny_model.build_tiny_model(out, seed=args.seed, spec=spec)
    print(f"{out}: tiny model ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
