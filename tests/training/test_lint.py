"""The lint catches each seed lesson (and names it), and passes every project config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from quantummind.paths import REPO_ROOT
from quantummind.training.config import load_config
from quantummind.training.lint import lint_config
from quantummind.training.memory import GpuInfo

TRAIN_PY = REPO_ROOT / "fine-tuning" / "train.py"
PROJECT_CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))


def lint(path: Path, **kw):
    return lint_config(load_config(path), gpu=kw.pop("gpu", None), **kw)


def test_tiny_config_is_clean(tiny_config):
    report = lint(tiny_config())
    assert report.errors == [] and report.warnings == [], report.findings
    assert report.memory is not None and report.memory.total_gib > 0


def test_unk_token_on_byte_level_bpe_from_disk(tiny_config):
    report = lint(tiny_config(special_tokens={"unk_token": "<unk>"}))
    assert "unk_token" in report.codes("error")
    assert any("unk_token" in f.message for f in report.errors)


def test_unk_token_known_by_family_without_tokenizer(tmp_path):
    cfg = {"base_model": "meta-llama/Llama-3.1-8B-Instruct", "special_tokens": {"unk_token": "<unk>"},
           "adapter": "qlora", "output_dir": str(tmp_path / "o"), "bf16": True}
    report = lint_config(cfg, gpu=None)
    assert "unk_token" in report.codes("error")
    # A sentencepiece family has a real <unk>: no unk_token error.
    cfg["base_model"] = "mistralai/Mistral-7B-v0.1"
    assert "unk_token" not in lint_config(cfg, gpu=None).codes()


def test_added_tokens_need_modules_to_save(tiny_config):
    report = lint(tiny_config(tokens=["<|qiskit|>"]))
    assert "modules_to_save" in report.codes("error")
    assert any("modules_to_save" in f.message for f in report.errors)
    fixed = lint(tiny_config(name="fixed", tokens=["<|qiskit|>"], lora_modules_to_save=["embed_tokens", "lm_head"]))
    assert "modules_to_save" not in fixed.codes()


def test_special_token_already_in_vocab_is_not_an_addition(tiny_config):
    report = lint(tiny_config(special_tokens={"pad_token": "<|endoftext|>"}))
    assert "modules_to_save" not in report.codes()


def test_no_validation_set_warns(tiny_config):
    report = lint(tiny_config(test_datasets=None, load_best_model_at_end=None, metric_for_best_model=None))
    assert "no_validation" in report.codes("warning") and report.exit_code == 0


def test_save_steps_not_multiple_of_eval_steps(tiny_config):
    report = lint(tiny_config(save_steps=30, eval_steps=25))
    assert "save_eval_steps" in report.codes("error")


def test_missing_dataset_file(tiny_config, tmp_path):
    report = lint(tiny_config(datasets=[{"path": str(tmp_path / "nope.jsonl"), "ds_type": "json",
                                         "type": "chat_template"}]))
    assert "missing_dataset" in report.codes("error")


def test_output_dir_with_checkpoints(tiny_config):
    path = tiny_config()
    out = Path(load_config(path)["output_dir"])
    (out / "checkpoint-10").mkdir(parents=True)
    assert "output_dir_has_checkpoints" in lint(path).codes("error")
    resumed = tiny_config(name="resume", auto_resume_from_checkpoints=True, output_dir=str(out))
    assert "output_dir_has_checkpoints" in lint(resumed).codes("warning")


@pytest.mark.parametrize("overrides, code", [
    ({"lora_mlp_kernel": None, "lora_qkv_kernel": None, "lora_o_kernel": None}, "cpu_lora_kernel"),
    ({"fp16": None, "bf16": None}, "cpu_precision"),
    ({"flash_attention": True}, "cpu_flash_attention"),
])
def test_cpu_run_without_cpu_keys(tiny_config, overrides, code):
    report = lint(tiny_config(**overrides), device="cpu")
    assert code in report.codes("error")


def test_cpu_warnings(tiny_config):
    report = lint(tiny_config(sample_packing=True, optimizer="adamw_bnb_8bit"), device="cpu")
    assert {"cpu_sample_packing", "cpu_optimizer"} <= report.codes("warning")


def test_gpu_memory_against_visible_gpu():
    cfg = load_config(REPO_ROOT / "configs" / "qwen2.5-coder-7b-qlora.yaml")
    small = lint_config(cfg, gpu=GpuInfo("RTX 3060", 12.0))
    assert "gpu_memory" in small.codes("error")
    big = lint_config(cfg, gpu=GpuInfo("A100-SXM4-40GB", 40.0))
    assert "gpu_memory" not in big.codes("error") | big.codes("warning")
    # No GPU: the estimate is reported, never a failure.
    none = lint_config(cfg, gpu=None)
    assert "gpu_memory" in none.codes("info") and none.memory.total_gib > 10


@pytest.fixture
def project_tree(tmp_path, tiny_model_dir, tiny_data) -> Path:
    """A working directory where every project config's relative paths exist: the real configs,
    unchanged, see what they would see in a prepared checkout (the GRPO configs: RL prompts and the
    merged SFT models, the tiny model standing in for both)."""
    from quantummind.training.dataset import generate_rl_prompts

    for rel in ("fine-tuning/data/quantum-mind", "build/data/tiny"):
        d = tmp_path / rel
        d.mkdir(parents=True)
        for name in ("train.jsonl", "val.jsonl"):
            (d / name).write_bytes((tiny_data / name).read_bytes())
    for rel in ("fine-tuning/data/quantum-mind-rl", "build/data/tiny-rl"):
        generate_rl_prompts(tmp_path / rel, 20, seed=0)
    (tmp_path / "build" / "tiny-qwen2").symlink_to(tiny_model_dir)
    (tmp_path / "fine-tuning" / "merged_models").mkdir(parents=True)
    for name in ("tiny-cpu", "quantum-mind-v1"):
        (tmp_path / "fine-tuning" / "merged_models" / name).symlink_to(tiny_model_dir)
    return tmp_path


# A GRPO config with trl.use_vllm needs its generation server up: tests/training/test_lint_grpo.py.
NO_SERVER_CONFIGS = [p for p in PROJECT_CONFIGS if "use_vllm: true" not in p.read_text()]


@pytest.mark.parametrize("config", NO_SERVER_CONFIGS, ids=lambda p: p.name)
def test_every_project_config_passes_lint(config, project_tree):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(TRAIN_PY), "lint", str(config)], cwd=project_tree,
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 error(s)" in proc.stdout


def test_lint_cli_exit_code_on_error(tiny_config):
    bad = tiny_config(special_tokens={"unk_token": "<unk>"})
    proc = subprocess.run([sys.executable, str(TRAIN_PY), "lint", str(bad)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "unk_token" in proc.stdout


def test_lint_cli_bad_config_path(tmp_path):
    proc = subprocess.run([sys.executable, str(TRAIN_PY), "lint", str(tmp_path / "missing.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "config not found" in proc.stderr
