"""`make demo`: the pipeline on the tiny local model, on the CPU."""

from __future__ import annotations

import sys

from quantummind.paths import TINY_MODEL_DIR
from quantummind.tiny_model import build_tiny_model, is_current_build


def main() -> int:
    if is_current_build(TINY_MODEL_DIR):
        print(f"[1] tiny base model: {TINY_MODEL_DIR} (up to date)")
    else:
        print("[1] building the tiny base model ...")
        build_tiny_model(TINY_MODEL_DIR)
        print(f"    -> {TINY_MODEL_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
