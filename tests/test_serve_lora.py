"""Base + unmerged LoRA on one vLLM server (LORA_MODULES), evaluated in one go (`run --model A --model B`)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from quantummind.serving import start_background_server


def _random_lora(base_dir, out_dir) -> None:
    """A PEFT LoRA adapter on every projection, B non-zero so it really changes the model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                         "gate_proj", "up_proj", "down_proj"])
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    peft_model.save_pretrained(out_dir)


@pytest.mark.slow
def test_two_models_on_one_endpoint_are_evaluated_and_compared(tiny_model_dir, serve_python, tmp_path):
    adapter = tmp_path / "tiny-lora"
    _random_lora(tiny_model_dir, adapter)
    server = start_background_server(tiny_model_dir, "tiny", tmp_path / "serve", max_len=512,
                                     extra_env={"LORA_MODULES": f"tiny-lora={adapter}"})
    with server:
        out = tmp_path / "eval"
        proc = subprocess.run(
            [sys.executable, "-m", "evaluation", "run", "--base-url", server.base_url, "--model", "tiny",
             "--model", "tiny-lora", "--num-tests", "6", "--max-tokens", "24", "--concurrency", "4",
             "--seed", "1", "--out", str(out), "--no-progress"],
            capture_output=True, text=True, timeout=600,
        )
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    for model in ("tiny", "tiny-lora"):
        log = yaml.safe_load((out / model / "validation_log.yaml").read_text())
        assert log["num_tests"] == 6 and log["model"] == model
        replies = (out / model / "replies.jsonl").read_text().splitlines()
        assert len(replies) == 6
    assert (out / "comparison" / "report.md").is_file()
    # the adapter changes the model: the two servers' replies to the same seeded prompts differ
    def replies(model: str) -> dict[str, str]:
        rows = [json.loads(line) for line in (out / model / "replies.jsonl").read_text().splitlines()]
        return {r["id"]: r["reply"] for r in rows}

    base, lora = replies("tiny"), replies("tiny-lora")
    assert base.keys() == lora.keys()
    assert any(base[k] != lora[k] for k in base)
