"""training_log.yaml records the checkpoints best-checkpoint selection had to leave out (issue 14)."""

from __future__ import annotations

import json

from quantummind.training.training_log import build_training_log


def _checkpoint(out, step: int, history: list[dict] | None) -> None:
    d = out / f"checkpoint-{step}"
    d.mkdir(parents=True)
    (d / "adapter_model.safetensors").write_bytes(b"")  # selection only needs it to exist
    if history is not None:
        (d / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": history}))


def test_unscored_checkpoints_are_in_the_log(tmp_path):
    out = tmp_path / "run"
    _checkpoint(out, 4, [{"step": 4, "loss": 1.0}, {"step": 4, "eval_loss": 0.8}])
    _checkpoint(out, 8, None)
    _checkpoint(out, 12, [{"step": 4, "eval_loss": 0.8}, {"step": 10, "eval_loss": 0.5}])
    log = build_training_log({"micro_batch_size": 2}, out, wall_seconds=60, gpu="none", on_gpu=False)
    assert (log["best_step"], log["best_eval_loss"]) == (4, 0.8)
    assert log["unscored_checkpoints"] == [
        {"checkpoint": str(out / "checkpoint-8"), "reason": "no trainer_state.json"},
        {"checkpoint": str(out / "checkpoint-12"), "reason": "no eval_loss at step 12 (eval logged at steps [4, 10])"},
    ]
