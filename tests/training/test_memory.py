"""Parameter counts without downloading: the table matches published totals, and the formula
matches a real model's parameter count."""

from __future__ import annotations

import pytest

from quantummind.training.memory import KNOWN_SHAPES, estimate_memory, shape_for


@pytest.mark.parametrize("name, total", [
    ("Qwen/Qwen2.5-Coder-7B-Instruct", 7_615_616_512),  # published model card: 7.61B
    ("meta-llama/Llama-3.1-8B-Instruct", 8_030_261_248),  # 8.03B
    ("Qwen/Qwen2.5-Coder-1.5B-Instruct", 1_543_714_304),  # 1.54B (tied)
    ("meta-llama/Llama-3.2-3B-Instruct", 3_212_749_824),  # 3.21B (tied)
])
def test_table_matches_published_totals(name, total):
    assert shape_for(name).num_parameters() == total


def test_unknown_model_has_no_shape():
    assert shape_for("someone/unknown-model") is None


def test_local_config_json_matches_real_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    shape = shape_for(str(tiny_model_dir))
    assert shape.source.endswith("config.json")
    assert shape.num_parameters() == sum(p.numel() for p in model.parameters())


def test_lora_count_matches_peft(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=8, target_modules=targets))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    est = estimate_memory({"adapter": "lora", "lora_r": 8, "lora_target_modules": targets},
                          shape_for(str(tiny_model_dir)))
    assert est.trainable_parameters == trainable


def test_estimate_terms_move_the_right_way():
    shape = KNOWN_SHAPES["qwen2.5-coder-7b"]
    base = {"adapter": "qlora", "load_in_4bit": True, "lora_r": 32, "bf16": True, "micro_batch_size": 2,
            "sequence_len": 2048, "gradient_checkpointing": True, "optimizer": "adamw_bnb_8bit",
            "flash_attention": True}
    est = estimate_memory(base, shape)
    assert 3.5 < est.base_weights_gib < 6  # ~0.5 B/param for 7B linear + bf16 embeddings
    assert estimate_memory({**base, "load_in_4bit": False, "adapter": "lora"}, shape).base_weights_gib > 13
    assert estimate_memory({**base, "gradient_checkpointing": False}, shape).activations_gib > est.activations_gib * 5
    assert estimate_memory({**base, "micro_batch_size": 4}, shape).total_gib > est.total_gib
