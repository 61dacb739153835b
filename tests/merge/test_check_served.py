"""`merge_adapter.py --check-served` (issue 22): vLLM serving the merged folder vs serving the chosen adapter on
the base, greedy token ids compared prompt by prompt."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from merge_helpers import copy_run
from quantummind.merge.served_check import CheckOptions, PromptAgreement, check_served
from quantummind.paths import REPO_ROOT

MERGE = [sys.executable, str(REPO_ROOT / "fine-tuning" / "merge_adapter.py")]
QUICK = ["--check-served", "--check-prompts", "4", "--check-max-tokens", "32"]


def test_agreement_is_the_common_prefix_over_the_longer_sequence():
    same = PromptAgreement.of("a", [1, 2, 3], [1, 2, 3])
    assert (same.agreed_prefix, same.agreement, same.first_divergence) == (3, 1.0, None)
    late = PromptAgreement.of("b", [1, 2, 3, 4], [1, 2, 9, 4])
    assert (late.agreed_prefix, late.agreement, late.first_divergence) == (2, 0.5, 2)
    shorter = PromptAgreement.of("c", [1, 2], [1, 2, 3, 4])  # one stopped early (eos): they differ at index 2
    assert (shorter.agreement, shorter.first_divergence) == (0.5, 2)
    assert PromptAgreement.of("d", [], []).agreement == 1.0


def test_check_flags_need_check_served(tmp_path):
    proc = subprocess.run([*MERGE, str(tmp_path / "none.yaml"), "--check-prompts", "3"], capture_output=True, text=True)
    assert proc.returncode == 2 and "need --check-served" in proc.stderr


@pytest.fixture(scope="module")
def checked_lora(lora_run, tmp_path_factory):
    """The real axolotl LoRA run merged with --check-served (16-bit LoRA: enforced)."""
    work = tmp_path_factory.mktemp("check-served")
    run = copy_run(lora_run, work / "run")
    out = work / "merged"
    proc = subprocess.run([*MERGE, str(run.config), "--output", str(out), *QUICK], capture_output=True, text=True,
                          timeout=900)
    return run, out, proc


@pytest.mark.slow
@pytest.mark.serve
def test_a_16bit_lora_served_and_merged_agree(checked_lora):
    _, out, proc = checked_lora
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    c = json.loads((out / "merge_report.json").read_text())["check_served"]
    assert c["mode"] == "lora" and c["enforced"] and c["passed"] is True
    assert c["prompts"] == 4 and c["identical_prompts"] == 4 and c["mean_agreement"] == 1.0
    assert all(p["merged_tokens"] > 0 and p["first_divergence"] is None for p in c["per_prompt"])
    assert "check-served: 4/4 prompts identical" in proc.stdout
    assert list((out / "check_served").glob("vllm-*.log")) and not list((out / "check_served").glob("*.pid"))


@pytest.mark.slow
@pytest.mark.serve
def test_a_corrupted_merge_fails_the_check_with_its_first_divergence(checked_lora, tmp_path):
    run, out, _ = checked_lora
    report = json.loads((out / "merge_report.json").read_text())
    bad = tmp_path / "corrupted"
    shutil.copytree(out, bad, ignore=shutil.ignore_patterns("check_served"))
    tensors = load_file(str(bad / "model.safetensors"))
    gen = torch.Generator().manual_seed(0)
    for name in [n for n in tensors if n.endswith("mlp.down_proj.weight")]:  # a merge that wrote the wrong deltas
        tensors[name] = tensors[name] + 0.5 * torch.randn(tensors[name].shape, generator=gen)
    save_file(tensors, str(bad / "model.safetensors"), metadata={"format": "pt"})
    check = check_served(bad, run.base_model, Path(report["checkpoint"]),
                         tmp_path / "serve", qlora=False, dtype=report["dtype"],
                         options=CheckOptions(prompts=4, max_tokens=32))
    assert check.failed and check.to_json()["passed"] is False
    assert check.mean_agreement < 0.98
    diverged = [p for p in check.per_prompt if p.first_divergence is not None]
    assert diverged and all(p.agreed_prefix == p.first_divergence < max(p.merged_tokens, p.served_tokens)
                            for p in diverged)


@pytest.mark.slow
@pytest.mark.serve
def test_qlora_differences_are_reported_not_enforced(qlora_run, tmp_path):
    run = copy_run(qlora_run, tmp_path / "run")
    proc = subprocess.run([*MERGE, str(run.config), "--output", str(tmp_path / "merged"), *QUICK],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    c = json.loads((tmp_path / "merged" / "merge_report.json").read_text())["check_served"]
    assert c["mode"] == "qlora" and c["enforced"] is False and c["passed"] is None
    assert 0.0 <= c["mean_agreement"] <= 1.0 and len(c["per_prompt"]) == 4
    assert "QLoRA: reported, not enforced" in proc.stdout
    print(f"\nQLoRA tiny model, served adapter vs merged: {c['identical_prompts']}/4 identical, "
          f"mean agreement {c['mean_agreement']}")
