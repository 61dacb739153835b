"""Issue 20: `train.py lint` knows GRPO configs (reward functions importable, the columns they read,
generation batch divisible by num_generations, a vLLM server reachable when use_vllm)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from quantummind.paths import REPO_ROOT
from quantummind.training.config import load_config
from quantummind.training.dataset import generate_rl_prompts
from quantummind.training.lint import lint_config

from .test_lint import TRAIN_PY, project_tree  # noqa: F401  (the fixture)

GRPO_7B = REPO_ROOT / "configs" / "qwen2.5-coder-7b-grpo.yaml"
TINY_GRPO = REPO_ROOT / "configs" / "tiny-cpu-grpo.yaml"


@pytest.fixture(scope="module")
def rl_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rl-data")
    generate_rl_prompts(out, 24, seed=3)
    return out


@pytest.fixture
def grpo_config(tmp_path, tiny_model_dir, rl_data):
    def make(trl: dict | None = None, **overrides) -> Path:
        cfg = yaml.safe_load(TINY_GRPO.read_text())
        cfg["base_model"] = str(tiny_model_dir)
        cfg["datasets"][0]["path"] = str(rl_data / "train.jsonl")
        cfg["output_dir"] = str(tmp_path / "out")
        cfg["dataset_prepared_path"] = str(tmp_path / "prepared")
        cfg["trl"].update(trl or {})
        cfg.update(overrides)
        path = tmp_path / "grpo.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    return make


def lint(path: Path, **kw):
    return lint_config(load_config(path), gpu=None, device="cpu", **kw)


def test_tiny_grpo_config_is_clean(grpo_config):
    report = lint(grpo_config())
    assert report.errors == [] and report.warnings == [], report.findings
    assert "grpo" in report.codes("info")
    assert "no_validation" not in report.codes()  # GRPO has no eval_loss: not an SFT lesson here


@pytest.mark.parametrize("name, why", [("quantummind.rewards.no_such_reward", "cannot be imported"),
                                       ("no_such_package.reward", "cannot be imported"),
                                       ("circuit_reward", "fully qualified"),
                                       ("quantummind.rewards.reward_workers", "fewer than two parameters")])
def test_unusable_reward_function_is_an_error(grpo_config, name, why):
    report = lint(grpo_config({"reward_funcs": [name]}))
    assert "grpo_reward" in report.codes("error")
    assert any(why in f.message and name in f.message for f in report.errors), report.findings


def test_dataset_without_reward_columns_is_an_error(grpo_config, tmp_path):
    sft_like = tmp_path / "sft.jsonl"
    sft_like.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    cfg = grpo_config()
    raw = yaml.safe_load(cfg.read_text())
    raw["datasets"][0]["path"] = str(sft_like)
    cfg.write_text(yaml.safe_dump(raw))
    report = lint(cfg)
    assert any(f.code == "grpo_dataset" and "hamiltonian" in f.message and "prepare_dataset.py --rl" in f.message
               for f in report.errors), report.findings


def test_generation_batch_must_divide_by_num_generations(grpo_config):
    report = lint(grpo_config({"num_generations": 3}))  # 4 x 2 = 8 completions, not a multiple of 3
    assert "grpo_generation_batch" in report.codes("error")
    assert "grpo_generation_batch" not in lint(grpo_config({"num_generations": 8})).codes()
    assert "grpo_generations" in lint(grpo_config({"num_generations": 1})).codes("error")


def test_weights_count_must_match(grpo_config):
    report = lint(grpo_config({"reward_weights": [1.0, 0.5]}))
    assert any("reward_weights" in f.message for f in report.errors)


def test_seed_lessons_still_apply_to_grpo(grpo_config):
    report = lint(grpo_config(fp16=None, special_tokens={"unk_token": "<unk>"}))
    assert {"unk_token", "cpu_precision"} <= report.codes("error")


def test_7b_grpo_config_needs_its_vllm_server(project_tree):  # noqa: F811
    """In a prepared checkout the 7B GRPO config's only error is the generation server not running."""
    proc = subprocess.run([sys.executable, str(TRAIN_PY), "lint", str(GRPO_7B), "--device", "gpu"], cwd=project_tree,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [line for line in proc.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "[grpo_vllm_server]" in errors[0] and "axolotl vllm-serve" in errors[0], proc.stdout


@pytest.mark.slow
def test_7b_grpo_config_lints_clean_with_a_real_vllm_server(project_tree, vllm_server):  # noqa: F811
    """With a real vLLM server (the tiny model, serve_vllm.sh) at the config's host:port, nothing is left."""
    port = int(vllm_server.base_url.rsplit(":", 1)[1].split("/")[0])
    cfg = yaml.safe_load(GRPO_7B.read_text())
    cfg["trl"]["vllm_server_port"] = port
    path = project_tree / "grpo-7b.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = subprocess.run([sys.executable, str(TRAIN_PY), "lint", str(path), "--device", "gpu"], cwd=project_tree,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "0 error(s)" in proc.stdout, proc.stdout + proc.stderr
