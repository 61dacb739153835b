"""Paths that used to degrade silently (issue 14): each now raises a clear error or is recorded in
merge_report.json and warned about on stderr, even under -q. Fast: PEFT-built checkpoints."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from merge_helpers import load_output_tensors, peft_merged_state, peft_run
from quantummind.merge import MergeError, merge
from quantummind.merge.vocab import MEAN_FALLBACK, SAMPLED
from quantummind.paths import REPO_ROOT, offline_env

CLI = REPO_ROOT / "fine-tuning" / "merge_adapter.py"
Q_PROJ = "model.layers.0.self_attn.q_proj.weight"


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CLI), *map(str, args)], capture_output=True, text=True,
                          env=offline_env(), timeout=300)


def report_of(out: Path) -> dict:
    return json.loads((out / "merge_report.json").read_text())


# ------------------------------------------------------------------ bnb_4bit_compute_dtype


def qlora_run(base: Path, work: Path, **bnb) -> Path:
    run = peft_run(base, work, {1: 1.0}, adapter="qlora",
                   extra={"load_in_4bit": True, "bf16": False, "bnb_config_kwargs": bnb})
    return run.config


def bnb_expected(base_w: torch.Tensor, peft_w: torch.Tensor, compute: torch.dtype) -> torch.Tensor:
    """The QLoRA-faithful merge by hand: bitsandbytes' own NF4 round trip of the base weight (the
    run's defaults: nf4, blocksize 64, double quant), cast to the compute dtype, plus PEFT's delta."""
    bnb_F = pytest.importorskip("bitsandbytes.functional")
    q, state = bnb_F.quantize_4bit(base_w.contiguous(), blocksize=64, quant_type="nf4", compress_statistics=True)
    return bnb_F.dequantize_4bit(q, state).to(compute).float() + (peft_w - base_w)


def test_compute_dtype_is_used_and_recorded(tiny_model_dir, tmp_path):
    base_w = load_output_tensors(tiny_model_dir)[Q_PROJ]
    dtypes = {"bfloat16": torch.bfloat16, "float32": torch.float32}
    for name, written in (("bfloat16", "torch.bfloat16"), ("float32", "float32")):
        cfg = qlora_run(tiny_model_dir, tmp_path / name, bnb_4bit_compute_dtype=written)
        result = merge(cfg, output=tmp_path / f"m-{name}")
        assert result.report["compute_dtype"] == name
        assert result.report["qlora"]["compute_dtype"] == name and result.report["qlora"]["train_dtype"] == "float32"
        ckpt = Path(yaml.safe_load(cfg.read_text())["output_dir"]) / "checkpoint-1"
        peft_w = peft_merged_state(tiny_model_dir, ckpt)[Q_PROJ]
        ours = load_output_tensors(result.output)[Q_PROJ]
        expected = {n: bnb_expected(base_w, peft_w, d) for n, d in dtypes.items()}
        assert torch.allclose(ours, expected[name], atol=1e-6, rtol=0), name
        other = "float32" if name == "bfloat16" else "bfloat16"
        assert (ours - expected[other]).abs().max() > 1e-5, "the two compute dtypes must be distinguishable"


def test_compute_dtype_defaults_to_the_training_dtype(tiny_model_dir, tmp_path):
    cfg = qlora_run(tiny_model_dir, tmp_path / "run")  # no bnb_4bit_compute_dtype, bf16: false
    assert merge(cfg, output=tmp_path / "m").report["compute_dtype"] == "float32"


@pytest.mark.parametrize("bad", ["bf32", "auto", "int8"])
def test_unknown_compute_dtype_is_an_error(bad, tiny_model_dir, tmp_path):
    cfg = qlora_run(tiny_model_dir, tmp_path / "run", bnb_4bit_compute_dtype=bad)
    proc = run_cli(cfg, "--output", tmp_path / "m")
    assert proc.returncode == 2, proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and f"bnb_4bit_compute_dtype {bad!r} is not supported" in last, proc.stderr
    assert "bfloat16, float16, float32" in last
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------ --verify and its tolerance


@pytest.fixture(scope="module")
def one_ckpt(tiny_model_dir, tmp_path_factory):
    return peft_run(tiny_model_dir, tmp_path_factory.mktemp("verify"), {1: 1.0})


def test_verify_passes_within_the_default_tolerance(one_ckpt, tmp_path):
    proc = run_cli(one_ckpt.config, "--output", tmp_path / "m", "--verify", "-q")
    assert proc.returncode == 0, proc.stderr[-2000:]
    v = report_of(tmp_path / "m")["verify"]
    assert v["tolerance"] == 1e-3 and v["passed"] is True
    assert v["max_abs_logit_diff"] < 1e-5  # float32 merge vs PEFT: summation-order noise only
    assert "verify: max |logit diff|" in proc.stdout and "tolerance 0.001" in proc.stdout


def _independent_diff(merged: Path, base: Path, ckpt: Path) -> float:
    """Max |logit diff| on one prompt, computed here with transformers + peft."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(merged))
    ids = tok("qc = QuantumCircuit(4)\nqc.ry(0.5, 0)", return_tensors="pt")["input_ids"]
    ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32), str(ckpt))
    ours = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32)
    with torch.no_grad():
        return float((ours(input_ids=ids).logits - ref.eval()(input_ids=ids).logits).abs().max())


def test_verify_past_the_tolerance_exits_1(one_ckpt, tiny_model_dir, tmp_path):
    """bfloat16 output rounds every weight: a real logit difference (~5e-3 on the tiny model),
    above a tolerance of 1e-4 and within the bfloat16 default (0.5)."""
    out = tmp_path / "m"
    proc = run_cli(one_ckpt.config, "--output", out, "--dtype", "bfloat16", "--verify", "--verify-tolerance",
                   "1e-4", "-q")
    assert proc.returncode == 1, proc.stdout + proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: verify failed") and "> tolerance 0.0001" in last, proc.stderr
    v = report_of(out)["verify"]  # the output is kept for inspection, and says it failed
    assert v["passed"] is False and v["tolerance"] == 1e-4
    one_prompt = _independent_diff(out, tiny_model_dir, one_ckpt.output_dir / "checkpoint-1")
    assert v["max_abs_logit_diff"] > 1e-4 and one_prompt > 1e-4
    assert one_prompt < 0.5  # the bfloat16 default would accept it
    proc = run_cli(one_ckpt.config, "--output", tmp_path / "m2", "--dtype", "bfloat16", "--verify", "-q")
    assert proc.returncode == 0 and report_of(tmp_path / "m2")["verify"]["tolerance"] == 0.5


def test_verify_catches_a_wrong_merge_at_the_default_tolerance(one_ckpt, tmp_path, monkeypatch):
    """A merge bug (one module's LoRA delta dropped) must fail --verify at the float32 default.
    The bug is injected: the real merge cannot be made wrong on demand."""
    merge_mod = importlib.import_module("quantummind.merge.merge")
    real = merge_mod._produce
    dropped = "model.layers.1.mlp.down_proj.weight"

    def buggy(name, tensor, *args, **kwargs):
        return tensor if name == dropped else real(name, tensor, *args, **kwargs)

    monkeypatch.setattr(merge_mod, "_produce", buggy)
    result = merge(one_ckpt.config, output=tmp_path / "m", verify=True)
    assert result.verify_failed and result.report["verify"]["passed"] is False
    assert result.report["verify"]["max_abs_logit_diff"] > 1e-3


def test_verify_tolerance_needs_verify_and_a_sane_value(one_ckpt, tmp_path):
    proc = run_cli(one_ckpt.config, "--output", tmp_path / "m", "--verify-tolerance", "0.1")
    assert proc.returncode == 2 and "--verify-tolerance needs --verify" in proc.stderr
    with pytest.raises(MergeError, match="must be a finite number >= 0"):
        merge(one_ckpt.config, output=tmp_path / "m", verify=True, verify_tolerance=-1.0)
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------ checkpoints left out of "best"


def test_unscored_checkpoints_are_warned_under_quiet_and_recorded(tiny_model_dir, tmp_path):
    run = peft_run(tiny_model_dir, tmp_path / "run", {2: 1.5, 4: 0.9, 6: 1.2})
    (run.output_dir / "checkpoint-4" / "trainer_state.json").unlink()  # the one that would have won
    state = run.output_dir / "checkpoint-2" / "trainer_state.json"
    data = json.loads(state.read_text())
    data["log_history"] = [{"step": 2, "loss": 1.0}, {"step": 1, "eval_loss": 0.1}]  # eval at another step
    state.write_text(json.dumps(data))

    out = tmp_path / "m"
    proc = run_cli(run.config, "--output", out, "-q")
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert warned == [
        "warning: checkpoint-2 left out of best-checkpoint selection: no eval_loss at step 2 "
        "(eval logged at steps [1])",
        "warning: checkpoint-4 left out of best-checkpoint selection: no trainer_state.json",
    ], proc.stderr
    assert "2 warning(s) in merge_report.json" in proc.stdout
    report = report_of(out)
    assert report["checkpoint"] == str(run.output_dir / "checkpoint-6")  # the only scored one
    ref = peft_merged_state(tiny_model_dir, run.output_dir / "checkpoint-6")
    assert torch.equal(load_output_tensors(out)[Q_PROJ], ref[Q_PROJ])
    assert [w.split(" ", 1)[0] for w in report["warnings"]] == ["checkpoint-2", "checkpoint-4"]
    assert [(c["step"], c["eval_loss"], c["unscored"]) for c in report["checkpoints"]] == [
        (2, None, "no eval_loss at step 2 (eval logged at steps [1])"),
        (4, None, "no trainer_state.json"),
        (6, 1.2, None)]


def test_unreadable_trainer_state_is_unscored_not_a_crash(tiny_model_dir, tmp_path):
    run = peft_run(tiny_model_dir, tmp_path / "run", {2: 1.5, 4: 0.9})
    (run.output_dir / "checkpoint-4" / "trainer_state.json").write_text("{truncated")
    result = merge(run.config, output=tmp_path / "m")
    assert result.report["checkpoint"] == str(run.output_dir / "checkpoint-2")
    assert result.report["warnings"] == [
        "checkpoint-4 left out of best-checkpoint selection: unreadable trainer_state.json (JSONDecodeError)"]


# ------------------------------------------------------------------ vocabulary resize fallback


def test_non_positive_definite_covariance_falls_back_to_the_mean_on_record(tiny_model_dir, tmp_path):
    """Every base embedding row the same (exactly representable values, so the covariance is
    exactly 0): the new rows cannot be sampled; they are the mean, with a warning and a record."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    tensors = load_output_tensors(base)
    emb = tensors["model.embed_tokens.weight"]
    row = torch.tensor([0.5, -0.25, 0.125, -0.0625] * (emb.shape[1] // 4))
    tensors["model.embed_tokens.weight"] = row.expand_as(emb).contiguous()
    save_file(tensors, str(base / "model.safetensors"), metadata={"format": "pt"})

    run = peft_run(base, tmp_path / "run", {1: 1.0})
    ckpt = run.output_dir / "checkpoint-1"
    tok = AutoTokenizer.from_pretrained(str(ckpt))
    old = len(tok)
    tok.add_tokens(["<|qa|>", "<|qb|>"])
    tok.save_pretrained(str(ckpt))

    proc = run_cli(run.config, "--output", tmp_path / "m", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "warning: embedding covariance not positive definite" in proc.stderr
    report = report_of(tmp_path / "m")
    assert report["resized_vocab"] == {"from": old, "to": old + 2, "new_rows": {
        "model.embed_tokens.weight": MEAN_FALLBACK, "lm_head.weight": SAMPLED}}
    assert report["warnings"] == [f"model.embed_tokens.weight: the 2 new rows are {MEAN_FALLBACK}"]
    ours = load_output_tensors(tmp_path / "m")
    assert torch.equal(ours["model.embed_tokens.weight"][old:], row.expand(2, -1))  # the mean of equal rows
    lm_new = ours["lm_head.weight"][old:]
    assert not torch.equal(lm_new[0], lm_new[1])  # lm_head's covariance is fine: sampled

