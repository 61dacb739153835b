"""Pick the checkpoint to merge: the one with the lowest eval_loss logged at its own step, or (GRPO runs,
which log no eval_loss) the one with the highest mean reward logged since the checkpoint before it."""

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
    reward: float | None = None  # GRPO: mean `reward` logged in (previous checkpoint's step, this step]

    def to_json(self) -> dict:
        return {"checkpoint": str(self.path), "step": self.step, "eval_loss": self.eval_loss,
                "unscored": self.unscored, "reward": self.reward}


@dataclass(frozen=True)
class CheckpointChoice:
    path: Path
    step: int | None
    eval_loss: float | None
    how: str  # "best" | "last" | "explicit"
    table: list[CheckpointScore] = field(default_factory=list)
    select_by: str = "eval_loss"  # what "best" ranked: "eval_loss" (lowest) or "reward" (highest mean)

    @property
    def unscored(self) -> list[CheckpointScore]:
        return [s for s in self.table if s.unscored is not None]

    @property
    def reward(self) -> float | None:
        return next((s.reward for s in self.table if s.path == self.path), None)

    def format_table(self) -> str:
        key = "reward" if self.select_by == "reward" else "eval_loss"
        lines = [f"{'':2}{'checkpoint':<40} {'step':>8} {key:>12}"]
        for s in self.table:
            mark = "->" if s.path == self.path else ""
            value = getattr(s, key)
            lines.append(f"{mark:2}{s.path.name:<40} {s.step:>8} {'-' if value is None else f'{value:.6f}':>12}")
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


def _reward_since(state: dict, since: int, step: int) -> float | None:
    """Mean of the `reward` values logged at steps in (since, step]; None when none was logged."""
    values = [float(e["reward"]) for e in state.get("log_history", []) if isinstance(e, dict)
              and isinstance(e.get("reward"), (int, float)) and isinstance(e.get("step"), int)
              and since < e["step"] <= step]
    return sum(values) / len(values) if values else None


def score_checkpoint(ckpt: Path, since: int = 0) -> CheckpointScore:
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
    return CheckpointScore(ckpt, step, loss, why, _reward_since(state, since, step))


def list_checkpoints(output_dir: str | Path) -> list[CheckpointScore]:
    out = Path(output_dir)
    if not out.is_dir():
        raise MergeError(f"output_dir {out} does not exist: train first or fix output_dir in the config")
    dirs = sorted((p for p in out.iterdir() if p.is_dir() and _CKPT_RE.match(p.name)),
                  key=lambda p: int(_CKPT_RE.match(p.name).group(1)))
    table: list[CheckpointScore] = []
    for p in dirs:
        table.append(score_checkpoint(p, since=table[-1].step if table else 0))
    return sorted(table, key=lambda s: s.step)


def require_adapter(ckpt: Path) -> None:
    if not (ckpt / ADAPTER_WEIGHTS).is_file():
        extra = " (only adapter_model.bin: re-save with safetensors)" if (ckpt / "adapter_model.bin").exists() else ""
        raise MergeError(f"{ckpt} has no {ADAPTER_WEIGHTS}{extra}: not a LoRA checkpoint, or an interrupted save")


SELECT_BY = ("eval_loss", "reward")


def lowest_eval_loss(table: list[CheckpointScore]) -> CheckpointScore | None:
    """The seed's rule: the lowest finite eval_loss (ties: the earlier step); None when no checkpoint has one."""
    scored = [s for s in table if s.eval_loss is not None and math.isfinite(s.eval_loss)]
    return min(scored, key=lambda s: (s.eval_loss, s.step)) if scored else None


def _best_by_reward(output_dir: str | Path, table: list[CheckpointScore]) -> CheckpointChoice:
    scored = [s for s in table if s.reward is not None]
    if not scored:
        raise MergeError(f"no reward logged at any checkpoint under {output_dir}: --select-by reward is for GRPO "
                         "runs (rl: grpo) that log `reward`; pass --checkpoint last|DIR")
    nan = [s for s in scored if not math.isfinite(s.reward)]
    if nan:
        raise MergeError(f"reward is NaN/inf at {', '.join(s.path.name for s in nan)}; pass --checkpoint DIR")
    best = max(scored, key=lambda s: (s.reward, s.step))
    require_adapter(best.path)
    logger.info("selected %s by reward: mean logged reward %.4f over the steps since the checkpoint before it",
                best.path.name, best.reward)
    return CheckpointChoice(best.path, best.step, best.eval_loss, "best", table, select_by="reward")


def select_checkpoint(output_dir: str | Path, which: str | Path = "best", select_by: str = "eval_loss") -> CheckpointChoice:
    """`which`: "best" (lowest eval_loss, or highest mean reward with select_by="reward"), "last" (highest
    step) or a checkpoint directory."""
    if select_by not in SELECT_BY:
        raise MergeError(f"select_by must be one of {', '.join(SELECT_BY)}, got {select_by!r}")
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
    if select_by == "reward":
        return _best_by_reward(output_dir, table)

    scored = [s for s in table if s.eval_loss is not None]
    if not scored:
        raise MergeError(
            f"no eval_loss logged at any checkpoint under {output_dir}: set a validation set "
            "(test_datasets or val_set_size) with eval_steps, or pass --checkpoint last|DIR "
            "(a GRPO run: --select-by reward)"
        )
    nan = [s for s in scored if not math.isfinite(s.eval_loss)]
    if nan:
        names = ", ".join(s.path.name for s in nan)
        raise MergeError(f"eval_loss is NaN/inf at {names}: training diverged; pass --checkpoint DIR to choose one")
    best = lowest_eval_loss(scored)
    require_adapter(best.path)
    choice = CheckpointChoice(best.path, best.step, best.eval_loss, "best", table)
    for s in choice.unscored:  # a warning (shown under -q too), also in merge_report.json
        logger.warning("warning: %s left out of best-checkpoint selection: %s", s.path.name, s.unscored)
    return choice
