"""End-to-end on checkpoints trained here by real axolotl (LoRA, QLoRA, added tokens)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from merge_helpers import load_output_tensors, peft_merged_state
from quantummind.merge import merge
from quantummind.merge.merge import FROM_ADAPTER
from quantummind.merge.settings import load_settings
from quantummind.merge.verify import load_trained_model, logits, max_logit_diff, prompt_batches
from quantummind.paths import REPO_ROOT, offline_env

from training.trainer_state import best_step, eval_losses

pytestmark = pytest.mark.slow
CLI = REPO_ROOT / "fine-tuning" / "merge_adapter.py"


def best_ckpt(output_dir):
    """The expected choice, from trainer_state.json parsed here (not the merge's reader)."""
    return output_dir / f"checkpoint-{best_step(output_dir)[0]}"


def greedy(model, ids, n: int = 8):
    with torch.no_grad():
        return model.generate(**ids, max_new_tokens=n, do_sample=False)[0].tolist()


def test_lora_run_cli_verify_equals_peft_and_generates(lora_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    proc = subprocess.run([sys.executable, str(CLI), str(lora_run.config), "--output", str(out), "--verify"],
                          capture_output=True, text=True, env=offline_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "merge_report.json").read_text())
    step, loss = best_step(lora_run.output_dir)
    assert report["checkpoint"] == str(lora_run.output_dir / f"checkpoint-{step}")
    assert report["eval_loss"] == loss
    assert sorted(eval_losses(lora_run.output_dir)) == [3, 6, 9]  # eval_steps = save_steps = 3, max_steps 9
    assert [c["step"] for c in report["checkpoints"] if c["eval_loss"] is not None] == [3, 6, 9]
    assert report["warnings"] == []
    v = report["verify"]
    assert v["passed"] is True and v["tolerance"] == 1e-3 and v["max_abs_logit_diff"] < 1e-4
    assert "verify: max |logit diff|" in proc.stdout

    ckpt = lora_run.output_dir / f"checkpoint-{step}"
    ref = peft_merged_state(lora_run.base_model, ckpt)
    ours = load_output_tensors(out)
    assert set(ours) == set(ref)
    for name, t in ours.items():
        assert torch.allclose(t, ref[name], atol=1e-5, rtol=0), name

    # The merged model generates what base + adapter (PEFT, unmerged) generates, token for token.
    from peft import PeftModel

    tok = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    trained = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(lora_run.base_model), dtype=torch.float32), str(ckpt)).eval()
    untrained = AutoModelForCausalLM.from_pretrained(str(lora_run.base_model), dtype=torch.float32).eval()
    ids = tok.apply_chat_template([{"role": "user", "content": "Create a 3-qubit circuit."}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ours_gen = greedy(model, ids)
    assert ours_gen == greedy(trained, ids)
    assert ours_gen != greedy(untrained, ids)  # the comparison can tell a merged adapter from none


def test_added_tokens_on_tied_model(tokens_run, tmp_path):
    """axolotl `tokens:` + lora_modules_to_save on a tied base: vocab grows, the trained rows and
    the trained run's tokenizer ship together."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = merge(tokens_run.config, output=tmp_path / "merged")
    base_rows = json.loads((tokens_run.base_model / "config.json").read_text())["vocab_size"]
    tok = AutoTokenizer.from_pretrained(str(result.output))
    resized = result.report["resized_vocab"]
    assert (resized["from"], resized["to"]) == (base_rows, len(tok))
    assert len(tok) == base_rows + 2
    new_id = tok.convert_tokens_to_ids("<|qiskit|>")
    assert new_id >= base_rows
    assert len(AutoTokenizer.from_pretrained(str(tokens_run.base_model))) == base_rows  # base tok is older

    ckpt = best_ckpt(tokens_run.output_dir)
    assert result.report["checkpoint"] == str(ckpt)
    ref = peft_merged_state(tokens_run.base_model, ckpt, rows=len(tok))
    ours = load_output_tensors(result.output)
    for name, t in ours.items():
        assert torch.allclose(t, ref[name], atol=1e-5, rtol=0), name
    cfg = json.loads((result.output / "config.json").read_text())
    assert cfg["vocab_size"] == len(tok)
    trained_apart = not torch.equal(ref["lm_head.weight"], ref["model.embed_tokens.weight"])
    assert cfg["tie_word_embeddings"] is (not trained_apart)
    assert ("lm_head.weight" in ours) is trained_apart and result.report["untied_embeddings"] is trained_apart
    # the grown rows are the adapter's trained ones (modules_to_save), for each matrix written
    expected_rows = {"model.embed_tokens.weight": FROM_ADAPTER}
    if trained_apart:
        expected_rows["lm_head.weight"] = FROM_ADAPTER
    assert resized["new_rows"] == expected_rows
    # The new token is one id, and the merged model's logits on it are the trained model's.
    from peft import PeftModel

    model = AutoModelForCausalLM.from_pretrained(str(result.output), dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(str(tokens_run.base_model), dtype=torch.float32)
    base.resize_token_embeddings(len(tok), mean_resizing=False)
    trained = PeftModel.from_pretrained(base, str(ckpt)).eval()
    ids = tok("<|qiskit|> qc = QuantumCircuit(2)", return_tensors="pt")["input_ids"]
    assert ids[0, 0].item() == new_id
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, trained(input_ids=ids).logits, atol=1e-4)


def test_qlora_faithful_merge_is_closer_to_the_trained_model(qlora_run, tmp_path, capsys):
    faithful = merge(qlora_run.config, output=tmp_path / "faithful")
    plain = merge(qlora_run.config, output=tmp_path / "plain", qlora_faithful=False)
    assert faithful.report["qlora_faithful"] is True and plain.report["qlora_faithful"] is False
    assert faithful.report["qlora"]["rounded_tensors"] == 14  # 7 projections x 2 layers, not embed/lm_head
    assert faithful.report["compute_dtype"] == plain.report["compute_dtype"] == "float32"  # bf16: false, unset

    from transformers import AutoModelForCausalLM

    settings = load_settings(qlora_run.config)
    ckpt = best_ckpt(qlora_run.output_dir)
    assert faithful.report["checkpoint"] == str(ckpt)
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

    from transformers import AutoTokenizer

    from quantummind.serving import start_background_server

    prompt = "<|qiskit|> qc = QuantumCircuit("
    result = merge(tokens_run.config, output=tmp_path / "merged-tokens")
    trained_ids = AutoTokenizer.from_pretrained(str(result.output))(prompt)["input_ids"]
    base_ids = AutoTokenizer.from_pretrained(str(tokens_run.base_model))(prompt)["input_ids"]
    assert len(base_ids) > len(trained_ids)  # the base tokenizer splits <|qiskit|> into pieces
    server = start_background_server(result.output, "merged", tmp_path / "run", max_len=512,
                                     timeout_s=300, extra_env={"QM_DEVICE": "cpu"})
    with server:
        body = json.dumps({"model": "merged", "prompt": prompt, "max_tokens": 5,
                           "temperature": 0, "logprobs": 1}).encode()
        req = urllib.request.Request(f"{server.base_url}/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            reply = json.loads(r.read())
        choice = reply["choices"][0]
        assert 1 <= reply["usage"]["completion_tokens"] <= 5
        assert reply["usage"]["completion_tokens"] == len(choice["logprobs"]["tokens"])
        # vLLM tokenized with the trained tokenizer shipped in the merged dir: <|qiskit|> is one token
        assert reply["usage"]["prompt_tokens"] == len(trained_ids)
