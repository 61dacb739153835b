"""Issue 20: GRPO checkpoints carry no eval_loss; `merge_adapter.py --select-by reward` picks the one with the
highest mean reward logged since the checkpoint before it, and says so."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from quantummind.merge import MergeError, select_checkpoint
from quantummind.paths import REPO_ROOT

from merge_helpers import peft_run

MERGE_PY = REPO_ROOT / "fine-tuning" / "merge_adapter.py"
# reward per step as TRL's GRPO trainer logs it; windows (0,2] 0.15, (2,4] 0.55, (4,6] 0.36; at the
# checkpoints' own steps alone, step 6 (0.52) would win
REWARDS = {1: 0.1, 2: 0.2, 3: 0.6, 4: 0.5, 5: 0.2, 6: 0.52}


@pytest.fixture(scope="module")
def grpo_run(tiny_model_dir, tmp_path_factory):
    run = peft_run(tiny_model_dir, tmp_path_factory.mktemp("grpo"), {2: None, 4: None, 6: None})
    for step in (2, 4, 6):
        history = [{"step": s, "reward": r, "reward_std": 0.1, "loss": 0.0} for s, r in REWARDS.items() if s <= step]
        (run.output_dir / f"checkpoint-{step}" / "trainer_state.json").write_text(
            json.dumps({"global_step": step, "log_history": history}))
    return run


def test_best_by_mean_reward_since_the_previous_checkpoint(grpo_run):
    choice = select_checkpoint(grpo_run.output_dir, "best", select_by="reward")
    assert choice.path.name == "checkpoint-4" and choice.select_by == "reward"
    assert choice.reward == pytest.approx(0.55)
    assert [round(s.reward, 4) for s in choice.table] == [0.15, 0.55, 0.36]
    assert "reward" in choice.format_table().splitlines()[0]


def test_eval_loss_selection_on_a_grpo_run_points_to_reward(grpo_run):
    with pytest.raises(MergeError, match="--select-by reward"):
        select_checkpoint(grpo_run.output_dir)


def test_cli_merges_the_reward_choice_and_says_so(grpo_run, tmp_path):
    proc = subprocess.run([sys.executable, str(MERGE_PY), str(grpo_run.config), "--select-by", "reward",
                           "--output", str(tmp_path / "m")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "reward 0.5500, selected by reward" in proc.stdout
    report = json.loads((tmp_path / "m" / "merge_report.json").read_text())
    assert report["select_by"] == "reward" and report["reward"] == pytest.approx(0.55)
    assert report["checkpoint"].endswith("checkpoint-4") and report["warnings"] == []


def test_cli_reward_selection_without_rewards_is_one_line(tiny_model_dir, tmp_path):
    sft = peft_run(tiny_model_dir, tmp_path, {2: 1.0, 4: 0.5})
    proc = subprocess.run([sys.executable, str(MERGE_PY), str(sft.config), "--select-by", "reward",
                           "--output", str(tmp_path / "m")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no reward logged" in proc.stderr
    assert not (tmp_path / "m").exists()
