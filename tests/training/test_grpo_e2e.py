"""Issue 20 end to end (slow): a short SFT of the tiny model, then the tiny GRPO config through plain
`accelerate launch -m axolotl.cli.train` on the CPU with circuit_reward scoring every completion in the
sandbox, then the wrapper's record of the reward, the merge selected by reward, and the merged model
served by serve_vllm.sh (real vLLM, CPU build) answering a chat request."""

from __future__ import annotations

import json
import math
import urllib.request
from pathlib import Path

import pytest
import yaml

from quantummind.paths import REPO_ROOT
from quantummind.serving import start_background_server
from quantummind.training.dataset import generate_rl_prompts

from .test_training import ACCELERATE, TRAIN_PY, run

MERGE_PY = REPO_ROOT / "fine-tuning" / "merge_adapter.py"
TINY_GRPO = REPO_ROOT / "configs" / "tiny-cpu-grpo.yaml"


@pytest.fixture(scope="module")
def sft_model(tmp_path_factory, tiny_model_dir, tiny_data) -> Path:
    """The tiny model after a short SFT on the simple dataset, merged: it writes runnable circuits often
    enough that GRPO has verdicts to reward."""
    root = tmp_path_factory.mktemp("grpo-sft")
    cfg = yaml.safe_load((REPO_ROOT / "configs" / "tiny-cpu.yaml").read_text())
    cfg.update(base_model=str(tiny_model_dir), output_dir=str(root / "out"), dataset_prepared_path=str(root / "prep"),
               max_steps=60, eval_steps=30, save_steps=30, logging_steps=10)
    cfg["datasets"][0]["path"] = str(tiny_data / "train.jsonl")
    cfg["test_datasets"][0]["path"] = str(tiny_data / "val.jsonl")
    path = root / "sft.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = run([str(ACCELERATE), "launch", "-m", "axolotl.cli.train", str(path)], cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    proc = run([str(Path(ACCELERATE).parent / "python"), str(MERGE_PY), str(path), "--output", str(root / "merged")],
               cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "merged"


@pytest.mark.slow
def test_tiny_grpo_run_rewards_through_the_sandbox_merges_and_serves(tmp_path, sft_model, serve_python):
    generate_rl_prompts(tmp_path / "rl", 60, seed=0)
    cfg = yaml.safe_load(TINY_GRPO.read_text())
    cfg.update(base_model=str(sft_model), output_dir=str(tmp_path / "out"), dataset_prepared_path=str(tmp_path / "prep"),
               max_steps=4, save_steps=2)
    cfg["datasets"][0]["path"] = str(tmp_path / "rl" / "train.jsonl")
    path = tmp_path / "grpo.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = tmp_path / "out"

    # 1. plain axolotl, the command
    proc = run([str(ACCELERATE), "launch", "-m", "axolotl.cli.train", str(path)], cwd=tmp_path, QM_REWARD_WORKERS="2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    history = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    steps = [e for e in history if "reward" in e]
    assert [e["step"] for e in steps] == [1, 2, 3, 4]
    # circuit_reward ran every step (its components are logged by it alone) and the sandbox judged
    # completions: syntax-valid code is only ever scored by executing it there; no judge error.
    assert all("circuit/verified" in e and e["circuit/judge_error"] == 0 for e in steps), steps
    assert sum(e["circuit/syntax_valid"] for e in steps) > 0, steps
    assert all(math.isfinite(e["reward"]) and 0 <= e["reward"] <= 1 for e in steps)

    # 2. the wrapper's record: reward per logging step, reward_curve.png (a second run, fresh output_dir)
    cfg["output_dir"] = str(tmp_path / "out2")
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = run([str(Path(ACCELERATE).parent / "python"), str(TRAIN_PY), "train", str(path)], cwd=tmp_path,
               QM_REWARD_WORKERS="2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = yaml.safe_load((tmp_path / "out2" / "training_log.yaml").read_text())
    assert log["rl"] == "grpo" and log["reward_funcs"] == ["quantummind.rewards.circuit_reward"]
    assert [r["step"] for r in log["rewards"]] == [1, 2, 3, 4]
    row = log["rewards"][0]
    assert set(row) >= {"mean", "std", "components", "verified_fraction"} and "circuit_reward" in row["components"]
    assert (tmp_path / "out2" / "reward_curve.png").stat().st_size > 1000
    assert "reward curve:" in proc.stdout and "--select-by reward" in proc.stdout

    # 3. merge the checkpoint selected by reward, then serve it
    proc = run([str(Path(ACCELERATE).parent / "python"), str(MERGE_PY), str(path), "--select-by", "reward",
                "--output", str(tmp_path / "merged")], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "selected by reward" in proc.stdout
    report = json.loads((tmp_path / "merged" / "merge_report.json").read_text())
    assert report["select_by"] == "reward" and report["reward"] == max(
        c["reward"] for c in report["checkpoints"] if c["reward"] is not None)
    with start_background_server(tmp_path / "merged", "tiny-grpo", tmp_path / "serve") as server:
        body = json.dumps({"model": "tiny-grpo", "max_tokens": 16, "temperature": 0,
                           "messages": [{"role": "user", "content": "Create a 4-qubit ansatz."}]}).encode()
        req = urllib.request.Request(server.base_url + "/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:  # noqa: S310 - loopback
            answer = json.loads(resp.read())
    assert answer["choices"][0]["message"]["content"] is not None
