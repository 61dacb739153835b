"""The record of a run: training_log.yaml (the seed's fields + best checkpoint + peak GPU memory)
and loss_curve.png, both read from the Trainer's own trainer_state.json files."""

from __future__ import annotations

import json
import logging
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from quantummind.merge.checkpoints import CheckpointChoice

logger = logging.getLogger(__name__)

LOSS_WARNING_THRESHOLD = 0.5  # seed Step 3.4: "Training loss < 0.5"
_UNSET: Any = object()  # `best` not given (None is an answer: no checkpoint has an eval_loss)


def checkpoints(output_dir: Path) -> list[Path]:
    """checkpoint-N directories by N, with or without trainer_state.json (the merge's pattern)."""
    from quantummind.merge.checkpoints import _CKPT_RE  # lazy: the merge package imports torch

    found = [p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and _CKPT_RE.match(p.name)]
    return sorted(found, key=lambda p: int(_CKPT_RE.match(p.name).group(1)))


def _state(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def log_history(output_dir: Path) -> list[dict[str, Any]]:
    """The fullest log_history available: the run's own trainer_state.json, else the last checkpoint's."""
    candidates = [_state(Path(output_dir))] + [_state(p) for p in checkpoints(output_dir)]
    return max((c.get("log_history") or [] for c in candidates), key=len, default=[])


def best_checkpoint(output_dir: Path) -> CheckpointChoice | None:
    """The checkpoint the merge would pick (lowest eval_loss); None when none has an eval_loss."""
    from quantummind.merge.checkpoints import select_checkpoint
    from quantummind.merge.errors import MergeError

    try:
        return select_checkpoint(output_dir, "best")
    except MergeError:
        return None


def final_train_loss(history: list[dict[str, Any]], streamed: float | None = None) -> float | None:
    """The seed's `train_result.training_loss` (mean over the run), as the Trainer reports it at the
    end; else the last logged training loss."""
    if streamed is not None:
        return streamed
    summary = [e["train_loss"] for e in history if "train_loss" in e]
    if summary:
        return float(summary[-1])
    return _last_loss(history)


def _last_loss(history: list[dict[str, Any]]) -> float | None:
    losses = [e["loss"] for e in history if "loss" in e]
    return float(losses[-1]) if losses else None


def _round4(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


_TRAIN_LOSS = re.compile(r"'train_loss':\s*'?([0-9.eE+-]+)")


def train_loss_from_output(text: str) -> float | None:
    """The Trainer's end-of-training summary dict, as printed in axolotl's output."""
    found = _TRAIN_LOSS.findall(text)
    return float(found[-1]) if found else None


def peak_gpu_memory_gib(history: list[dict[str, Any]]) -> float | None:
    """axolotl logs torch.cuda.max_memory_allocated with every log line on a GPU; absent on a CPU."""
    values = [float(v) for e in history for k, v in e.items() if k.startswith("memory/max_alloc")]
    return max(values) if values else None


def count_jsonl(path: str) -> int | None:
    p = Path(path)
    if not p.is_file():
        return None
    with p.open(encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def _dataset_paths(cfg: dict[str, Any], key: str) -> list[str]:
    return [str(d["path"]) for d in cfg.get(key) or [] if isinstance(d, dict) and d.get("path")]


def _sum_counts(paths: list[str]) -> int | None:
    counts = [count_jsonl(p) for p in paths]
    return sum(counts) if counts and all(c is not None for c in counts) else None


def build_training_log(cfg: dict[str, Any], output_dir: Path, *, wall_seconds: float, gpu: str,
                       world_size: int = 1, streamed_train_loss: float | None = None,
                       on_gpu: bool = True, history: list[dict[str, Any]] | None = None,
                       best: CheckpointChoice | None = _UNSET) -> dict[str, Any]:
    """`history`/`best`: log_history() and best_checkpoint() of output_dir, when the caller has them."""
    if history is None:
        history = log_history(output_dir)
    if best is _UNSET:
        best = best_checkpoint(output_dir)
    train_paths, val_paths = _dataset_paths(cfg, "datasets"), _dataset_paths(cfg, "test_datasets")
    mbs, gas = int(cfg.get("micro_batch_size") or 1), int(cfg.get("gradient_accumulation_steps") or 1)
    loss = final_train_loss(history, streamed_train_loss)
    log = {
        # The seed's fields (Step 3.4, Action 4), in its order.
        "version": Path(output_dir).name,
        "base_model": cfg.get("base_model"),
        "training_data": train_paths[0] if len(train_paths) == 1 else train_paths,
        "num_train_examples": _sum_counts(train_paths),
        "num_val_examples": _sum_counts(val_paths),
        "epochs": cfg.get("num_epochs"),
        "final_train_loss": _round4(loss),
        "training_time_hours": round(wall_seconds / 3600, 4),
        "gpu": gpu,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "lora_r": cfg.get("lora_r"),
        "lora_alpha": cfg.get("lora_alpha"),
        "learning_rate": cfg.get("learning_rate"),
        "batch_size_effective": mbs * gas * world_size,
        # Added: what the merge and the user need next.
        "last_train_loss": _round4(_last_loss(history)),
        "best_eval_loss": None if best is None else round(best.eval_loss, 4),
        "best_step": None if best is None else best.step,
        "best_checkpoint": None if best is None else str(best.path),
        # checkpoints "best" could not consider (no trainer_state.json, eval at other steps): warned too
        "unscored_checkpoints": [] if best is None else [{"checkpoint": str(c.path), "reason": c.unscored}
                                                         for c in best.unscored],
        "global_steps": max((int(e.get("step", 0)) for e in history), default=0),
        # axolotl logs 0.0 on a CPU: no GPU, no peak.
        "peak_gpu_memory_gib": peak_gpu_memory_gib(history) if on_gpu else None,
        "config": cfg.get("_config_path"),
        "loss_curve": "loss_curve.png",
    }
    if is_grpo(cfg):
        log.update(reward_summary(cfg, history, Path(output_dir)))
    return log


def is_grpo(cfg: dict[str, Any]) -> bool:
    return str(cfg.get("rl") or "").lower() == "grpo"


def _finite(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return round(v, 6) if math.isfinite(v) else None


# What TRL's GRPO trainer logs per logging step: reward (mean over the batch, weighted sum of the reward
# functions), reward_std, rewards/<function>/mean|std; quantummind.rewards adds circuit/* fractions.
def reward_history(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per logging step that logged a reward: step, mean, std, per component, verified fraction."""
    rows = []
    for e in history:
        if "reward" not in e or "step" not in e:
            continue
        components = {k.split("/")[1]: {"mean": _finite(e[k]), "std": _finite(e.get(k[:-len("mean")] + "std"))}
                      for k in e if k.startswith("rewards/") and k.endswith("/mean")}
        judge = {k.split("/", 1)[1]: _finite(v) for k, v in e.items() if k.startswith("circuit/")}
        rows.append({"step": int(e["step"]), "mean": _finite(e["reward"]), "std": _finite(e.get("reward_std")),
                     "components": components, "verified_fraction": judge.get("verified"), "judge": judge})
    return rows


def best_reward_checkpoint(output_dir: Path) -> CheckpointChoice | None:
    """The checkpoint `merge_adapter.py --select-by reward` would pick; None when none logged a reward."""
    from quantummind.merge.checkpoints import select_checkpoint
    from quantummind.merge.errors import MergeError

    try:
        return select_checkpoint(output_dir, "best", select_by="reward")
    except MergeError:
        return None


def reward_summary(cfg: dict[str, Any], history: list[dict[str, Any]], output_dir: Path) -> dict[str, Any]:
    """training_log.yaml's GRPO fields: the reward per logging step, where it ended, the best checkpoint."""
    rows = reward_history(history)
    best = best_reward_checkpoint(output_dir)
    means = [r["mean"] for r in rows if r["mean"] is not None]
    trl = cfg.get("trl") or {}
    return {"rl": "grpo", "reward_funcs": list(trl.get("reward_funcs") or []),
            "num_generations": trl.get("num_generations"),
            "first_reward_mean": means[0] if means else None, "final_reward_mean": means[-1] if means else None,
            "max_reward_mean": max(means) if means else None,
            "best_reward_checkpoint": None if best is None else str(best.path),
            "best_reward": None if best is None else _finite(best.reward),
            "rewards": rows, "reward_curve": "reward_curve.png"}


def plot_reward_curve(output_dir: Path, history: list[dict[str, Any]], path: Path | None = None) -> Path:
    """Mean reward (± std) and the verified fraction per logging step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in reward_history(history) if r["mean"] is not None]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    if rows:
        steps = [r["step"] for r in rows]
        mean = [r["mean"] for r in rows]
        std = [r["std"] or 0.0 for r in rows]
        ax.plot(steps, mean, color="tab:green", lw=1.4, marker="o", ms=3, label="mean reward")
        ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color="tab:green", alpha=0.15, label="± std")
        verified = [(r["step"], r["verified_fraction"]) for r in rows if r["verified_fraction"] is not None]
        if verified:
            ax.plot(*zip(*verified), color="tab:purple", lw=1.2, ls="--", label="verified fraction")
    return _save_plot(fig, ax, "reward", path or Path(output_dir) / "reward_curve.png", Path(output_dir).name)


def _save_plot(fig: Any, ax: Any, what: str, out: Path, run_name: str) -> Path:
    ax.set_xlabel("step")
    ax.set_ylabel(what)
    ax.set_title(f"{run_name}: {what}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out


def write_training_log(log: dict[str, Any], output_dir: Path) -> Path:
    path = Path(output_dir) / "training_log.yaml"
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(log, sort_keys=False, default_flow_style=False), encoding="utf-8")
    tmp.replace(path)
    return path


def plot_loss_curve(output_dir: Path, path: Path | None = None, *, history: list[dict[str, Any]] | None = None,
                    best: CheckpointChoice | None = _UNSET) -> Path:
    """Train and eval loss vs step, the best checkpoint marked (`history`/`best` as in build_training_log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if history is None:
        history = log_history(output_dir)
    if best is _UNSET:
        best = best_checkpoint(output_dir)
    train = [(e["step"], e["loss"]) for e in history if "loss" in e and "step" in e]
    evals = [(e["step"], e["eval_loss"]) for e in history if "eval_loss" in e and "step" in e]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue", lw=1.4)
    if evals:
        ax.plot(*zip(*evals), label="eval loss", color="tab:orange", marker="o", ms=4, lw=1.4)
    if best is not None:
        ax.scatter([best.step], [best.eval_loss], s=160, marker="*", color="tab:red", zorder=5,
                   label=f"best checkpoint (step {best.step}, {best.eval_loss:.3f})")
    ax.axhline(LOSS_WARNING_THRESHOLD, color="grey", ls=":", lw=1, label="seed threshold 0.5")
    return _save_plot(fig, ax, "loss", path or Path(output_dir) / "loss_curve.png", Path(output_dir).name)
