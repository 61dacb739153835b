"""Every project config passes axolotl's own pydantic schema (validate_config), offline.

GPU configs are validated with the capabilities of the GPU they are written for (bf16, sm_80,
and 4 GPUs for the FSDP one), the tiny config with a CPU host's: exactly what `load_cfg` does on
the training host, minus touching the hardware or the hub.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from quantummind.paths import REPO_ROOT

CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml"))
DEEPSPEED = sorted((REPO_ROOT / "configs" / "deepspeed").glob("*.json"))

axolotl_config = pytest.importorskip("axolotl.utils.config")


def capabilities(cfg: dict, name: str) -> dict:
    gpu = bool(cfg.get("bf16"))
    return {"bf16": gpu, "fp8": False, "tf32": gpu, "compute_capability": "sm_80" if gpu else None,
            "n_gpu": 4 if ("fsdp_config" in cfg or "deepspeed" in cfg) else 1}


def validate(cfg: dict, name: str):
    from axolotl.utils.dict import DictDefault

    return axolotl_config.validate_config(DictDefault(cfg), capabilities=capabilities(cfg, name),
                                          env_capabilities={"torch_version": "2.13.0"})


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_passes_axolotl_schema(path: Path):
    cfg = yaml.safe_load(path.read_text())
    out = validate(cfg, path.name)
    assert out["base_model"] == cfg["base_model"]
    assert out["output_dir"].startswith("fine-tuning/checkpoints/")
    if path.name == "tiny-cpu.yaml":  # the CPU keys survive validation (no kernels, no fp16)
        assert out["lora_mlp_kernel"] is False and out.get("fp16") is False and out.get("bf16") is False


def test_seed_step_3_4_values():
    cfg = validate(yaml.safe_load((REPO_ROOT / "configs" / "qwen2.5-coder-7b-qlora.yaml").read_text()), "q")
    expected = {"base_model": "Qwen/Qwen2.5-Coder-7B-Instruct", "load_in_4bit": True, "adapter": "qlora",
                "lora_r": 32, "lora_alpha": 64, "lora_dropout": 0.05, "sequence_len": 2048,
                "sample_packing": True, "micro_batch_size": 2, "gradient_accumulation_steps": 8,
                "num_epochs": 3, "learning_rate": 2e-4, "lr_scheduler": "cosine", "warmup_ratio": 0.1,
                "optimizer": "adamw_bnb_8bit", "weight_decay": 0.01, "max_grad_norm": 1.0,
                # the seed's 500/500 is never reached with packing (~130-200 steps): docs/configs.md
                "logging_steps": 10, "save_steps": 25, "eval_steps": 25, "save_total_limit": 3,
                "seed": 42, "bf16": True, "gradient_checkpointing": True,
                "output_dir": "fine-tuning/checkpoints/quantum-mind-v1"}
    assert {k: cfg[k] for k in expected} == expected
    assert sorted(cfg["lora_target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def test_llama_style_configs_have_no_unk_token():
    for name, r in (("llama-3.1-8b-qlora-style.yaml", 64), ("llama-3.1-8b-lora-style.yaml", 128)):
        cfg = yaml.safe_load((REPO_ROOT / "configs" / name).read_text())
        assert "unk_token" not in (cfg.get("special_tokens") or {}) and cfg["lora_r"] == r
        assert cfg["num_epochs"] == 5


@pytest.mark.parametrize("ds", DEEPSPEED, ids=lambda p: p.name)
def test_qwen_config_with_deepspeed_json_passes_schema(ds: Path, tmp_path):
    json.loads(ds.read_text())  # valid JSON
    cfg = yaml.safe_load((REPO_ROOT / "configs" / "qwen2.5-coder-7b-qlora.yaml").read_text())
    cfg["deepspeed"] = str(ds)
    out = validate(cfg, "qwen-deepspeed")
    assert out["deepspeed"]


def test_schema_rejects_a_broken_config():
    cfg = yaml.safe_load((REPO_ROOT / "configs" / "qwen2.5-coder-7b-qlora-fsdp.yaml").read_text())
    cfg["optimizer"] = "adamw_bnb_8bit"  # FSDP2 cannot shard bitsandbytes optimizer state
    with pytest.raises(Exception, match="adamw_bnb_8bit"):
        validate(cfg, "broken")
