"""The merged folder's tokenizer (issue 22): the base's files byte for byte when the run added nothing; the base's
layout with the run's tokens when it did, readable by transformers 4.x and 5.x and served by vLLM.

The bases are laid out the way Qwen2.5 and Llama-3.1 ship their tokenizers (chat template inside
tokenizer_config.json, `added_tokens_decoder`, no chat_template.jinja; Llama also special_tokens_map.json), built
locally from the tiny model. The checkpoints save their tokenizer through transformers 5, as axolotl does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from merge_helpers import TARGETS, write_peft_checkpoint
from quantummind.merge import merge
from quantummind.serving import start_background_server

MESSAGES = [{"role": "system", "content": "You are a quantum computing expert."},
            {"role": "user", "content": "Create a 4-qubit ansatz for the XY chain."}]
NEW_SPECIAL, NEW_PLAIN = "<|qiskit|>", "<|ansatz|>"


def shipped_layout(model_dir: Path, dest: Path, family: str) -> Path:
    """A copy of the tiny model whose tokenizer files are laid out as `family` ("qwen2.5" | "llama-3.1") ships them."""
    shutil.copytree(model_dir, dest)
    tok = json.loads((dest / "tokenizer.json").read_text())
    template = (dest / "chat_template.jinja").read_text()
    (dest / "chat_template.jinja").unlink()
    decoder = {str(t["id"]): {"content": t["content"], "lstrip": False, "normalized": False, "rstrip": False,
                              "single_word": False, "special": True} for t in tok["added_tokens"]}
    specials = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    if family == "qwen2.5":
        cfg = {"add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": decoder,
               "additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "bos_token": None,
               "chat_template": template, "clean_up_tokenization_spaces": False, **specials, "errors": "replace",
               "model_max_length": 2048, "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer",
               "unk_token": None}
    else:
        cfg = {"added_tokens_decoder": decoder, "bos_token": "<|endoftext|>", "chat_template": template,
               "clean_up_tokenization_spaces": True, **specials,
               "model_input_names": ["input_ids", "attention_mask"], "model_max_length": 2048,
               "tokenizer_class": "PreTrainedTokenizerFast"}
        (dest / "special_tokens_map.json").write_text(json.dumps(
            {"bos_token": {"content": "<|endoftext|>", "lstrip": False, "normalized": False, "rstrip": False,
                           "single_word": False},
             "eos_token": {"content": "<|im_end|>", "lstrip": False, "normalized": False, "rstrip": False,
                           "single_word": False}}, indent=2) + "\n")
    (dest / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    return dest


def tokens_checkpoint(base: Path, ckpt: Path, step: int = 2) -> dict[str, int]:
    """A PEFT checkpoint of a run that added a special and a plain token (embeddings in modules_to_save), its
    tokenizer saved by transformers 5 as axolotl saves it. Returns the new tokens' ids."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base))
    tok.add_special_tokens({"additional_special_tokens": [NEW_SPECIAL]}, replace_extra_special_tokens=False)
    tok.add_tokens([NEW_PLAIN])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    peft_model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, target_modules=TARGETS,
                                                  modules_to_save=["embed_tokens", "lm_head"]))
    ckpt.mkdir(parents=True)
    peft_model.save_pretrained(str(ckpt))
    tok.save_pretrained(str(ckpt))
    (ckpt / "trainer_state.json").write_text(json.dumps(
        {"global_step": step, "log_history": [{"step": step, "eval_loss": 1.0}]}))
    return {t: tok.convert_tokens_to_ids(t) for t in (NEW_SPECIAL, NEW_PLAIN)}


def _config(tmp_path: Path, base: Path, out: Path) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"base_model": str(base), "output_dir": str(out), "adapter": "lora"}))
    return cfg


@pytest.mark.parametrize("family", ["qwen2.5", "llama-3.1"])
def test_a_run_that_added_nothing_ships_the_base_tokenizer_byte_for_byte(tiny_model_dir, tmp_path, family):
    base = shipped_layout(tiny_model_dir, tmp_path / "base", family)
    out = tmp_path / "out" / "run"
    write_peft_checkpoint(base, out / "checkpoint-2", seed=0, eval_loss=1.0, step=2)
    saved = json.loads((out / "checkpoint-2" / "tokenizer_config.json").read_text())
    assert "chat_template" not in saved, "transformers 5 no longer rewrites it this way: revisit tokenizer_files.py"
    result = merge(_config(tmp_path, base, out), output=tmp_path / "merged")
    assert result.report["tokenizer_layout"] == "base" and result.report["tokenizer_changes"] == []
    shipped = sorted(p.name for p in base.iterdir() if p.name.startswith(("tokenizer", "special_tokens", "chat_")))
    assert result.report["tokenizer_files"] == [f for f in result.report["tokenizer_files"] if f in shipped]
    assert sorted(result.report["tokenizer_files"]) == shipped
    for f in shipped:
        assert (result.output / f).read_bytes() == (base / f).read_bytes(), f
    assert not (result.output / "chat_template.jinja").exists()


@pytest.fixture(scope="module")
def merged_with_tokens(tiny_model_dir, tmp_path_factory):
    merged = {}
    for family in ("qwen2.5", "llama-3.1"):
        work = tmp_path_factory.mktemp(f"tokens-{family}")
        base = shipped_layout(tiny_model_dir, work / "base", family)
        out = work / "out" / "run"
        ids = tokens_checkpoint(base, out / "checkpoint-2")
        merged[family] = (base, out / "checkpoint-2", merge(_config(work, base, out), output=work / "merged"), ids)
    return merged


@pytest.mark.parametrize("family", ["qwen2.5", "llama-3.1"])
def test_a_run_that_added_tokens_keeps_the_shipped_layout_and_renders_the_same_prompt(merged_with_tokens, family):
    from transformers import AutoTokenizer

    base, ckpt, result, ids = merged_with_tokens[family]
    r = result.report
    assert r["tokenizer_layout"] == "run_compatible" and "added_tokens" in r["tokenizer_changes"]
    assert r["added_tokens"] == [NEW_SPECIAL, NEW_PLAIN]
    cfg = json.loads((result.output / "tokenizer_config.json").read_text())
    base_cfg = json.loads((base / "tokenizer_config.json").read_text())
    # the shipped layout: template inside tokenizer_config.json, no .jinja, no list-valued extra_special_tokens
    assert cfg["chat_template"] == base_cfg["chat_template"] and not (result.output / "chat_template.jinja").exists()
    assert not isinstance(cfg.get("extra_special_tokens"), list)
    assert {k: v for k, v in cfg.items() if k not in ("added_tokens_decoder", "additional_special_tokens")} == \
        {k: v for k, v in base_cfg.items() if k not in ("added_tokens_decoder", "additional_special_tokens")}
    decoder = cfg["added_tokens_decoder"]
    assert decoder[str(ids[NEW_SPECIAL])]["content"] == NEW_SPECIAL and decoder[str(ids[NEW_SPECIAL])]["special"]
    assert decoder[str(ids[NEW_PLAIN])]["content"] == NEW_PLAIN
    assert all(decoder[i] == e for i, e in base_cfg["added_tokens_decoder"].items())  # the base's entries kept
    assert NEW_SPECIAL in cfg["additional_special_tokens"]
    if (base / "special_tokens_map.json").exists():
        stm = json.loads((result.output / "special_tokens_map.json").read_text())
        assert NEW_SPECIAL in stm["additional_special_tokens"] and stm["eos_token"] == "<|im_end|>"
    # transformers 5 (.venv) reads it: the same chat prompt as the base, the new tokens are single ids
    merged_tok, base_tok = AutoTokenizer.from_pretrained(str(result.output)), AutoTokenizer.from_pretrained(str(base))
    render = {"tokenize": False, "add_generation_prompt": True}
    assert merged_tok.apply_chat_template(MESSAGES, **render) == base_tok.apply_chat_template(MESSAGES, **render)
    prompt_ids = base_tok.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=True, return_dict=True)
    assert merged_tok.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=True,
                                          return_dict=True)["input_ids"] == prompt_ids["input_ids"]
    for token, i in ids.items():
        assert merged_tok.encode(token, add_special_tokens=False) == [i]
    assert len(merged_tok) == json.loads((result.output / "config.json").read_text())["vocab_size"]


def test_transformers_5s_own_save_is_what_the_rewrite_repairs(merged_with_tokens):
    """The checkpoint's own files (transformers 5's save) are the case: list-valued extra_special_tokens and the
    template moved out of tokenizer_config.json. If a transformers update stops doing this, this test says so."""
    _, ckpt, _, _ = merged_with_tokens["qwen2.5"]
    saved = json.loads((ckpt / "tokenizer_config.json").read_text())
    assert isinstance(saved.get("extra_special_tokens"), list) and "chat_template" not in saved
    assert (ckpt / "chat_template.jinja").is_file()


@pytest.mark.slow
@pytest.mark.serve
def test_vllm_serves_chat_completions_from_the_rewritten_folder(merged_with_tokens, tmp_path):
    _, _, result, _ = merged_with_tokens["qwen2.5"]
    import openai

    with start_background_server(result.output, "tokens", tmp_path / "serve", max_len=512) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="EMPTY")
        resp = client.chat.completions.create(model="tokens", messages=MESSAGES, max_tokens=8, temperature=0)
        assert resp.choices[0].message.content is not None and resp.usage.completion_tokens > 0
        # the server rendered the base's chat prompt: the same prompt length as the base tokenizer's rendering
        from transformers import AutoTokenizer

        base_tok = AutoTokenizer.from_pretrained(str(merged_with_tokens["qwen2.5"][0]))
        n = len(base_tok.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=True,
                                             return_dict=True)["input_ids"])
        assert resp.usage.prompt_tokens == n


def test_a_run_with_another_chat_template_keeps_it_inside_the_config(tiny_model_dir, tmp_path):
    """axolotl's `chat_template: chatml` (or a jinja of the user's) on a base with another template: the merged
    model must render what training rendered, in the base's layout."""
    from transformers import AutoTokenizer

    base = shipped_layout(tiny_model_dir, tmp_path / "base", "qwen2.5")
    out = tmp_path / "out" / "run"
    ckpt = write_peft_checkpoint(base, out / "checkpoint-2", seed=0, eval_loss=1.0, step=2)
    trained = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    tok = AutoTokenizer.from_pretrained(str(ckpt))
    tok.chat_template = trained
    tok.save_pretrained(str(ckpt))
    result = merge(_config(tmp_path, base, out), output=tmp_path / "merged")
    r = result.report
    assert (r["tokenizer_layout"], r["tokenizer_changes"], r["added_tokens"]) == ("run_compatible", ["chat_template"], [])
    cfg = json.loads((result.output / "tokenizer_config.json").read_text())
    assert cfg["chat_template"] == trained and not (result.output / "chat_template.jinja").exists()
    merged_tok = AutoTokenizer.from_pretrained(str(result.output))
    assert merged_tok.apply_chat_template(MESSAGES, tokenize=False) == tok.apply_chat_template(MESSAGES, tokenize=False)
