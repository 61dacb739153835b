"""Pick the checkpoint to merge: the one with the lowest eval_loss logged at its own step."""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from quantummind.merge.errors import MergeError

logger = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter_model.safetensors"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class CheckpointScore:
    path: Path
    step: int
    eval_loss: float | None  # None: no eval logged at this checkpoint's step
    unscored: str | None = None  # why eval_loss is None (no trainer_state.json, eval at other steps)

    def to_json(self) -> dict:
        return {"checkpoint": str(self.path), "step": self.step, "eval_loss": self.eval_loss,
                "unscored": self.unscored}


@dataclass(frozen=True)
class CheckpointChoice:
    path: Path
    step: int | None
    eval_loss: float | None
    how: str  # "best" | "last" | "explicit"
    table: list[CheckpointScore] = field(default_factory=list)

    @property
    def unscored(self) -> list[CheckpointScore]:
        return [s for s in self.table if s.unscored is not None]

    def format_table(self) -> str:
        lines = [f"{'':2}{'checkpoint':<40} {'step':>8} {'eval_loss':>12}"]
        for s in self.table:
            mark = "->" if s.path == self.path else ""
            loss = "-" if s.eval_loss is None else f"{s.eval_loss:.6f}"
            lines.append(f"{mark:2}{s.path.name:<40} {s.step:>8} {loss:>12}")
        return "\n".join(lines)


def _eval_loss_at(state: dict, step: int) -> tuple[float | None, str | None]:
    """(eval_loss logged at `step`, None) or (None, why there is none)."""
    evals = [e for e in state.get("log_history", []) if isinstance(e, dict) and "eval_loss" in e]
    losses = [e["eval_loss"] for e in evals if e.get("step") == step]
    if losses:
        return float(losses[-1]), None
    if not evals:
        return None, "no eval_loss in trainer_state.json"
    steps = sorted({e.get("step") for e in evals if isinstance(e.get("step"), int)})
    return None, f"no eval_loss at step {step} (eval logged at steps {steps})"


def score_checkpoint(ckpt: Path) -> CheckpointScore:
    m = _CKPT_RE.match(ckpt.name)
    dir_step = int(m.group(1)) if m else -1
    state_path = ckpt / "trainer_state.json"
    if not state_path.is_file():
        return CheckpointScore(ckpt, dir_step, None, "no trainer_state.json")
    try:
        state = json.loads(state_path.read_text())
        step = int(state.get("global_step", dir_step))
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        return CheckpointScore(ckpt, dir_step, None, f"unreadable trainer_state.json ({type(exc).__name__})")
    loss, why = _eval_loss_at(state, step)
    return CheckpointScore(ckpt, step, loss, why)


def list_checkpoints(output_dir: str | Path) -> list[CheckpointScore]:
    out = Path(output_dir)
    if not out.is_dir():
        raise MergeError(f"output_dir {out} does not exist: train first or fix output_dir in the config")
    dirs = [p for p in out.iterdir() if p.is_dir() and _CKPT_RE.match(p.name)]
    return sorted((score_checkpoint(p) for p in dirs), key=lambda s: s.step)


def require_adapter(ckpt: Path) -> None:
    if not (ckpt / ADAPTER_WEIGHTS).is_file():
        extra = " (only adapter_model.bin: re-save with safetensors)" if (ckpt / "adapter_model.bin").exists() else ""
        raise MergeError(f"{ckpt} has no {ADAPTER_WEIGHTS}{extra}: not a LoRA checkpoint, or an interrupted save")


def select_checkpoint(output_dir: str | Path, which: str | Path = "best") -> CheckpointChoice:
    """`which`: "best" (lowest eval_loss), "last" (highest step) or a checkpoint directory."""
    if str(which) not in ("best", "last"):
        path = Path(which)
        if not path.is_dir():
            raise MergeError(f"--checkpoint {path}: no such directory")
        require_adapter(path)
        score = score_checkpoint(path)
        table = list_checkpoints(output_dir) if Path(output_dir).is_dir() else [score]
        return CheckpointChoice(path, score.step, score.eval_loss, "explicit", table)

    table = list_checkpoints(output_dir)
    if not table:
        raise MergeError(f"no checkpoint-* directories under {output_dir}: training saved none (set save_steps)")
    if which == "last":
        last = table[-1]
        require_adapter(last.path)
        return CheckpointChoice(last.path, last.step, last.eval_loss, "last", table)

    scored = [s for s in table if s.eval_loss is not None]
    if not scored:
        raise MergeError(
            f"no eval_loss logged at any checkpoint under {output_dir}: set a validation set "
            "(test_datasets or val_set_size) with eval_steps, or pass --checkpoint last|DIR"
        )
    nan = [s for s in scored if not math.isfinite(s.eval_loss)]
    if nan:
        names = ", ".join(s.path.name for s in nan)
        raise MergeError(f"eval_loss is NaN/inf at {names}: training diverged; pass --checkpoint DIR to choose one")
    best = min(scored, key=lambda s: (s.eval_loss, s.step))
    require_adapter(best.path)
    choice = CheckpointChoice(best.path, best.step, best.eval_loss, "best", table)
    for s in choice.unscored:  # a warning (shown under -q too), also in merge_report.json
        logger.warning("warning: %s left out of best-checkpoint selection: %s", s.path.name, s.unscored)
    return choice
