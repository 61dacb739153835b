"""End-to-end on checkpoints trained here by real axolotl (LoRA, QLoRA, added tokens)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from merge_helpers import load_output_tensors, peft_merged_state
from quantummind.merge import merge, select_checkpoint
from quantummind.merge.settings import load_settings
from quantummind.merge.verify import load_trained_model, logits, max_logit_diff, prompt_batches
from quantummind.paths import REPO_ROOT, offline_env

pytestmark = pytest.mark.slow
CLI = REPO_ROOT / "fine-tuning" / "merge_adapter.py"


def test_lora_run_cli_verify_equals_peft_and_generates(lora_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    proc = subprocess.run([sys.executable, str(CLI), str(lora_run.config), "--output", str(out), "--verify"],
                          capture_output=True, text=True, env=offline_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "merge_report.json").read_text())
    choice = select_checkpoint(lora_run.output_dir)
    assert report["checkpoint"] == str(choice.path)
    scored = [c for c in report["checkpoints"] if c["eval_loss"] is not None]
    assert len(scored) >= 3 and report["eval_loss"] == min(c["eval_loss"] for c in scored)
    assert report["verify"]["max_abs_logit_diff"] < 1e-4
    assert "verify: max |logit diff|" in proc.stdout

    ref = peft_merged_state(lora_run.base_model, choice.path)
    ours = load_output_tensors(out)
    assert set(ours) == set(ref)
    for name, t in ours.items():
        assert torch.allclose(t, ref[name], atol=1e-5, rtol=0), name

    tok = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    ids = tok.apply_chat_template([{"role": "user", "content": "Create a 3-qubit circuit."}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    gen = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert gen.shape[1] == ids["input_ids"].shape[1] + 8 or tok.eos_token_id in gen[0].tolist()


def test_added_tokens_on_tied_model(tokens_run, tmp_path):
    """axolotl `tokens:` + lora_modules_to_save on a tied base: vocab grows, the trained rows and
    the trained run's tokenizer ship together."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = merge(tokens_run.config, output=tmp_path / "merged")
    base_rows = json.loads((tokens_run.base_model / "config.json").read_text())["vocab_size"]
    tok = AutoTokenizer.from_pretrained(str(result.output))
    assert result.report["resized_vocab"] == {"from": base_rows, "to": len(tok)}
    assert len(tok) == base_rows + 2
    new_id = tok.convert_tokens_to_ids("<|qiskit|>")
    assert new_id >= base_rows
    assert len(AutoTokenizer.from_pretrained(str(tokens_run.base_model))) == base_rows  # base tok is older

    ckpt = select_checkpoint(tokens_run.output_dir).path
    ref = peft_merged_state(tokens_run.base_model, ckpt, rows=len(tok))
    ours = load_output_tensors(result.output)
    for name, t in ours.items():
        assert torch.allclose(t, ref[name], atol=1e-5, rtol=0), name
    cfg = json.loads((result.output / "config.json").read_text())
    assert cfg["vocab_size"] == len(tok)
    if not torch.equal(ref["lm_head.weight"], ref["model.embed_tokens.weight"]):
        assert cfg["tie_word_embeddings"] is False and "lm_head.weight" in ours
    model = AutoModelForCausalLM.from_pretrained(str(result.output), dtype=torch.float32)
    ids = tok("<|qiskit|> qc = QuantumCircuit(2)", return_tensors="pt")["input_ids"]
    assert ids[0, 0].item() == new_id
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()


def test_qlora_faithful_merge_is_closer_to_the_trained_model(qlora_run, tmp_path, capsys):
    faithful = merge(qlora_run.config, output=tmp_path / "faithful")
    plain = merge(qlora_run.config, output=tmp_path / "plain", qlora_faithful=False)
    assert faithful.report["qlora_faithful"] is True and plain.report["qlora_faithful"] is False
    assert faithful.report["qlora"]["rounded_tensors"] == 14  # 7 projections x 2 layers, not embed/lm_head

    from transformers import AutoModelForCausalLM

    settings = load_settings(qlora_run.config)
    ckpt = select_checkpoint(qlora_run.output_dir).path
    batches = prompt_batches(faithful.output)
    trained = logits(load_trained_model(qlora_run.base_model, ckpt, settings, quantized=True), batches)
    diffs = {}
    for name, res in (("faithful", faithful), ("plain", plain)):
        model = AutoModelForCausalLM.from_pretrained(str(res.output), dtype=torch.float32).eval()
        diffs[name] = max_logit_diff(logits(model, batches), trained)
    with capsys.disabled():
        print(f"\nQLoRA tiny model, max |logit - trained 4-bit+adapter logit|: "
              f"faithful {diffs['faithful']:.3g}, plain {diffs['plain']:.3g}")
    assert diffs["faithful"] < 1e-4
    assert diffs["faithful"] * 100 < diffs["plain"]
    # embed_tokens / lm_head were never 4-bit: the faithful merge leaves them untouched.
    f, p = load_output_tensors(faithful.output), load_output_tensors(plain.output)
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"):
        assert torch.equal(f[name], p[name]), name


@pytest.mark.serve
def test_merged_model_with_added_tokens_is_served_by_vllm(tokens_run, serve_python, tmp_path):
    """The merged directory (trained tokenizer, resized + untied embeddings) is vLLM-ready."""
    import urllib.request

    from quantummind.serving import start_background_server

    result = merge(tokens_run.config, output=tmp_path / "merged-tokens")
    server = start_background_server(result.output, "merged", tmp_path / "run", max_len=512,
                                     timeout_s=300, extra_env={"QM_DEVICE": "cpu"})
    with server:
        body = json.dumps({"model": "merged", "prompt": "<|qiskit|> qc = QuantumCircuit(", "max_tokens": 5,
                           "temperature": 0, "logprobs": 1}).encode()
        req = urllib.request.Request(f"{server.base_url}/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            reply = json.loads(r.read())
        choice = reply["choices"][0]
        assert reply["usage"]["completion_tokens"] >= 1 and isinstance(choice["text"], str)
        assert reply["usage"]["prompt_tokens"] >= 2  # <|qiskit|> is one token of the trained tokenizer
