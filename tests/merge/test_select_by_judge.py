"""`merge_adapter.py --select-by judge` (issue 22): the checkpoint chosen by what it writes, through one vLLM
server with every checkpoint as a LoRA adapter and the real sandboxed judge."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from merge_helpers import peft_run, write_peft_checkpoint
from quantummind.merge import MergeError, merge
from quantummind.merge.judge_select import JudgeOptions
from quantummind.paths import REPO_ROOT

MERGE = [sys.executable, str(REPO_ROOT / "fine-tuning" / "merge_adapter.py")]


def _merge_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MERGE, *map(str, args)], capture_output=True, text=True, timeout=1800)


@pytest.mark.slow
@pytest.mark.serve
def test_judge_and_eval_loss_disagree_and_the_report_says_by_how_much(demo_model, tmp_path):
    """Two real LoRA adapters on the demo's fine-tuned tiny model (which writes verifying circuits): a gentle one
    (B ~ N(0, 1e-4): it still writes what the model learnt) and a destructive one (B ~ N(0, 0.05)). Training
    cannot produce 'the lower eval_loss writes circuits that do not verify' on demand, so each checkpoint's
    trainer_state.json logs the eval_loss of that scenario: the destructive adapter's is lower."""
    run = tmp_path / "run"
    out = run / "out" / "peft-run"
    write_peft_checkpoint(demo_model, out / "checkpoint-10", seed=1, b_std=1e-4, eval_loss=0.0123, step=10)
    write_peft_checkpoint(demo_model, out / "checkpoint-20", seed=2, b_std=0.05, eval_loss=0.0089, step=20)
    config = run / "config.yaml"
    config.write_text(yaml.safe_dump({"base_model": str(demo_model), "output_dir": str(out), "adapter": "lora"}))

    by_loss = _merge_cli(config, "--output", tmp_path / "by-loss", "-q")
    assert by_loss.returncode == 0, by_loss.stderr[-3000:]
    assert json.loads((tmp_path / "by-loss" / "merge_report.json").read_text())["checkpoint"].endswith("checkpoint-20")

    by_judge = _merge_cli(config, "--select-by", "judge", "--select-prompts", "12", "--select-seed", "3",
                          "--select-max-tokens", "256", "--output", tmp_path / "by-judge")
    assert by_judge.returncode == 0, by_judge.stdout[-3000:] + by_judge.stderr[-3000:]
    merged = tmp_path / "by-judge"
    report = json.loads((merged / "merge_report.json").read_text())
    assert report["checkpoint"].endswith("checkpoint-10") and report["selected_by"] == "judge"
    assert report["eval_loss"] == pytest.approx(0.0123)
    j = report["judge_selection"]
    assert (j["prompts"], j["seed"], j["max_tokens"]) == (12, 3, 256)
    assert j["winner"].endswith("checkpoint-10") and j["eval_loss_choice"].endswith("checkpoint-20")
    rates = {Path(c["checkpoint"]).name: c for c in j["checkpoints"]}
    good, bad = rates["checkpoint-10"]["verification"], rates["checkpoint-20"]["verification"]
    # each rate re-counted from that checkpoint's own judged replies
    for name, c in rates.items():
        rows = [json.loads(line) for line in (merged / "selection" / name / "results.jsonl").read_text().splitlines()]
        assert len(rows) == 12
        assert c["verification"]["successes"] == sum(bool(r.get("verification_pass")) for r in rows)
        log = yaml.safe_load((merged / "selection" / name / "validation_log.yaml").read_text())
        assert log["model"] == name and log["num_tests"] == 12
    assert good["successes"] >= 6 and bad["successes"] < good["successes"], (good, bad)
    lo, hi = good["ci95"]
    assert lo <= good["rate"] <= hi
    v = j["versus_eval_loss"]
    assert (v["a"], v["b"]) == ("checkpoint-20", "checkpoint-10")
    assert v["b_only"] - v["a_only"] == good["successes"] - bad["successes"]  # both answered all 12 with a verdict
    assert 0 < v["p_value"] <= 1
    text = (merged / "selection" / "report.md").read_text()
    assert "**winner**" in text and "eval_loss choice" in text and "McNemar p" in text
    assert f"{v['p_value']:.3g}" in text
    assert (merged / "selection" / "comparison" / "report.md").is_file()
    assert "selected by the judge" in by_judge.stdout
    # the merged model is the winner's: the same tensors as merging checkpoint-10 explicitly
    explicit = _merge_cli(config, "--checkpoint", out / "checkpoint-10", "--output", tmp_path / "explicit", "-q")
    assert explicit.returncode == 0, explicit.stderr
    assert (merged / "model.safetensors").read_bytes() == (tmp_path / "explicit" / "model.safetensors").read_bytes()
    assert not list((merged / "selection" / "serve").glob("*.pid")), "the selection server was left running"


def test_an_adapter_vllm_cannot_serve_is_one_line_and_nothing_is_merged(tiny_model_dir, tmp_path):
    run = peft_run(tiny_model_dir, tmp_path, {2: 0.5, 4: 0.4}, lora={"modules_to_save": ["lm_head"]})
    proc = _merge_cli(run.config, "--select-by", "judge", "--output", tmp_path / "merged")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "modules_to_save" in lines[0] and "lora_modules_to_save" in lines[0], lines
    assert not (tmp_path / "merged").exists() and not list(tmp_path.glob(".merged*"))


def test_judge_flags_need_select_by_judge_and_exclude_checkpoint(tiny_model_dir, tmp_path):
    run = peft_run(tiny_model_dir, tmp_path, {2: 0.5})
    proc = _merge_cli(run.config, "--select-prompts", "5")
    assert proc.returncode == 2 and "need --select-by judge" in proc.stderr
    proc = _merge_cli(run.config, "--select-by", "judge", "--select-prompts", "0")
    assert proc.returncode == 2 and ">= 1" in proc.stderr
    proc = _merge_cli(run.config, "--select-by", "judge", "--checkpoint", "last", "--output", tmp_path / "m")
    assert proc.returncode == 2 and "--checkpoint" in proc.stderr and not (tmp_path / "m").exists()


@pytest.mark.slow
@pytest.mark.serve
def test_a_server_that_does_not_start_is_a_merge_error_and_nothing_is_written(tiny_model_dir, tmp_path):
    """vLLM itself refuses to start: a --max-model-len beyond the model's context."""
    run = peft_run(tiny_model_dir, tmp_path, {2: 0.5})
    with pytest.raises(MergeError, match="did not start") as err:
        merge(run.config, select_by="judge", output=tmp_path / "merged",
              judge=JudgeOptions(prompts=2, max_len=10**7, serve_timeout_s=240))
    assert "\n" not in str(err.value) and "Error" in str(err.value), str(err.value)  # vLLM's root cause, one line
    assert not (tmp_path / "merged").exists() and not list(tmp_path.glob(".merged*"))


def _cand(name: str, step: int, loss: float | None, verified: int, bp_free: int, n: int = 10):
    from quantummind.merge.checkpoints import CheckpointScore
    from quantummind.merge.judge_select import Candidate, Rate

    score = CheckpointScore(Path(name), step, loss)
    return Candidate(score, Path(name), Rate(n, n), Rate(verified, n), Rate(bp_free, n), 0)


def test_ranking_verification_then_bp_free_then_eval_loss_then_step():
    from quantummind.merge.judge_select import Candidate

    def best(*cands):
        return max(cands, key=Candidate.rank_key).name

    assert best(_cand("a", 1, 0.1, 5, 5), _cand("b", 2, 0.9, 6, 0)) == "b"  # verification first
    assert best(_cand("a", 1, 0.9, 6, 4), _cand("b", 2, 0.1, 6, 3)) == "a"  # then BP-free
    assert best(_cand("a", 1, 0.2, 6, 4), _cand("b", 2, 0.1, 6, 4)) == "b"  # then the lower eval_loss
    assert best(_cand("a", 1, 0.2, 6, 4), _cand("b", 2, None, 6, 4)) == "a"  # none logged ranks below a loss
    assert best(_cand("a", 1, None, 6, 4), _cand("b", 2, None, 6, 4)) == "b"  # GRPO runs: then the later step
