"""Test-side reference for checkpoint scores: trainer_state.json parsed directly with json, not with
the merge's checkpoint reader (quantummind.merge.checkpoints), whose choices the tests check."""

from __future__ import annotations

import json
from pathlib import Path


def checkpoint_dirs(output_dir: Path) -> dict[int, Path]:
    """step -> checkpoint-<step> directory, as the HF Trainer names them."""
    return {int(p.name.split("-", 1)[1]): p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir()}


def eval_losses(output_dir: Path) -> dict[int, float]:
    """step -> eval_loss for every saved checkpoint, from the *last* checkpoint's log_history (it holds
    the whole run's history; each checkpoint's own file is what the merge reads)."""
    dirs = checkpoint_dirs(output_dir)
    history = json.loads((dirs[max(dirs)] / "trainer_state.json").read_text())["log_history"]
    return {e["step"]: e["eval_loss"] for e in history if "eval_loss" in e and e["step"] in dirs}


def best_step(output_dir: Path) -> tuple[int, float]:
    """(step, eval_loss) of the checkpoint with the lowest eval_loss (earliest on ties)."""
    losses = eval_losses(output_dir)
    step = min(losses, key=lambda s: (losses[s], s))
    return step, losses[step]
