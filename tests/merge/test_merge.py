"""The streaming merge against PEFT's merge_and_unload, on PEFT-built checkpoints (fast)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from merge_helpers import copy_run, load_output_tensors, peft_merged_state, peft_run, reshard
from quantummind.merge import MergeError, merge, select_checkpoint
from quantummind.merge.vocab import SAMPLED
from quantummind.paths import REPO_ROOT, offline_env

CLI = REPO_ROOT / "fine-tuning" / "merge_adapter.py"


def assert_equal_to_peft(out_dir: Path, ref: dict) -> None:
    """Bit-identical (torch.equal) to PEFT's float32 merge_and_unload: the merge computes in PEFT's
    order, so not even float32 rounding may differ (docs/merge.md quotes this test)."""
    ours = load_output_tensors(out_dir)
    cfg = json.loads((out_dir / "config.json").read_text())
    assert ours, "no tensors written"
    for name, t in ours.items():
        assert name in ref, name
        assert t.shape == ref[name].shape, name
        assert t.dtype == ref[name].dtype == torch.float32, name
        assert torch.equal(t, ref[name]), (name, float((t - ref[name]).abs().max()))
    if not cfg.get("tie_word_embeddings"):
        assert "lm_head.weight" in ours
    assert set(ref) - set(ours) <= {"lm_head.weight"}


@pytest.fixture(scope="module")
def three_ckpts(tiny_model_dir, tmp_path_factory):
    """Checkpoints at steps 2/4/6 where the middle one has the lowest eval_loss."""
    return peft_run(tiny_model_dir, tmp_path_factory.mktemp("three"), {2: 1.5, 4: 0.9, 6: 1.2})


def test_best_not_last_is_selected_and_equals_peft(three_ckpts, tmp_path):
    best = three_ckpts.output_dir / "checkpoint-4"  # the fixture's lowest eval_loss (0.9)
    choice = select_checkpoint(three_ckpts.output_dir)
    assert choice.path == best and choice.eval_loss == 0.9 and choice.unscored == []
    assert [s.step for s in choice.table] == [2, 4, 6]
    assert "->checkpoint-4" in choice.format_table().replace(" ", "")

    result = merge(three_ckpts.config, output=tmp_path / "m")
    assert_equal_to_peft(result.output, peft_merged_state(three_ckpts.base_model, best))
    report = json.loads((result.output / "merge_report.json").read_text())
    assert report["checkpoint"] == str(best) and report["selection"] == "best"
    assert report["step"] == 4 and report["eval_loss"] == 0.9
    assert [(c["step"], c["eval_loss"], c["unscored"]) for c in report["checkpoints"]] == [
        (2, 1.5, None), (4, 0.9, None), (6, 1.2, None)]
    assert report["base_model"] == str(three_ckpts.base_model) and report["dtype"] == "float32"
    assert report["resized_vocab"] is None and report["qlora_faithful"] is False and report["qlora"] is None
    assert report["compute_dtype"] is None  # a LoRA run: no 4-bit base, no compute dtype
    assert report["warnings"] == [] and "verify" not in report
    assert report["shards"] == ["model.safetensors"]
    assert 0 < report["seconds"] < 600 and report["peak_rss_bytes"] > 50 * 2**20  # torch alone is more
    cfg = json.loads((result.output / "config.json").read_text())
    assert cfg["torch_dtype"] == "float32" and "quantization_config" not in cfg
    gen = json.loads((result.output / "generation_config.json").read_text())
    eos = gen["eos_token_id"] if isinstance(gen["eos_token_id"], list) else [gen["eos_token_id"]]
    im_end = {t["content"]: t["id"] for t in json.loads((best / "tokenizer.json").read_text())["added_tokens"]}
    assert im_end["<|im_end|>"] in eos  # the trained run's eos stops generation
    # the run added no tokens: the base's tokenizer files, byte for byte (issue 22; the run's are transformers
    # 5's rewrite of them)
    assert report["tokenizer_layout"] == "base" and report["added_tokens"] == []
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (result.output / f).read_bytes() == (three_ckpts.base_model / f).read_bytes(), f


def test_last_and_explicit_checkpoint(three_ckpts, tmp_path):
    last = merge(three_ckpts.config, checkpoint="last", output=tmp_path / "last")
    six = three_ckpts.output_dir / "checkpoint-6"
    assert last.report["checkpoint"] == str(six) and last.report["selection"] == "last"
    assert_equal_to_peft(last.output, peft_merged_state(three_ckpts.base_model, six))
    explicit = three_ckpts.output_dir / "checkpoint-2"
    result = merge(three_ckpts.config, checkpoint=str(explicit), output=tmp_path / "m")
    assert result.report["checkpoint"] == str(explicit) and result.report["selection"] == "explicit"
    assert_equal_to_peft(result.output, peft_merged_state(three_ckpts.base_model, explicit))


@pytest.mark.parametrize("lora", [
    {"use_rslora": True},
    {"use_dora": True},
    {"r": 4, "lora_alpha": 8, "rank_pattern": {"q_proj": 2}, "alpha_pattern": {"down_proj": 32}},
    {"target_modules": ["q_proj", "v_proj", "embed_tokens"]},
], ids=["rslora", "dora", "patterns", "lora-on-embedding"])
def test_variants_equal_peft(lora, tiny_model_dir, tmp_path):
    run = peft_run(tiny_model_dir, tmp_path / "run", {1: 1.0}, lora=lora)
    result = merge(run.config, output=tmp_path / "m")
    assert_equal_to_peft(result.output, peft_merged_state(tiny_model_dir, run.output_dir / "checkpoint-1"))


def test_tied_embeddings_with_modules_to_save(tied_model_dir, tmp_path):
    """Tied base, embed_tokens + lm_head trained as full copies: PEFT's merged model has two
    different matrices, so the merged checkpoint must be written untied to behave the same."""
    run = peft_run(tied_model_dir, tmp_path / "run", {1: 1.0},
                   lora={"modules_to_save": ["embed_tokens", "lm_head"]})
    result = merge(run.config, output=tmp_path / "m")
    ref = peft_merged_state(tied_model_dir, run.output_dir / "checkpoint-1")
    assert not torch.equal(ref["lm_head.weight"], ref["model.embed_tokens.weight"])
    assert_equal_to_peft(result.output, ref)
    cfg = json.loads((result.output / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is False and result.report["untied_embeddings"] is True


def test_tied_embeddings_lora_on_lm_head_unties(tied_model_dir, tmp_path):
    """A LoRA on a tied lm_head changes only the output projection during training. PEFT's
    merge_and_unload adds it to the shared matrix (the input embedding changes too); we untie,
    so the merged model computes what the trained model computed."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = peft_run(tied_model_dir, tmp_path / "run", {1: 1.0}, lora={"target_modules": ["q_proj", "lm_head"]})
    ckpt = run.output_dir / "checkpoint-1"
    result = merge(run.config, output=tmp_path / "m")
    assert json.loads((result.output / "config.json").read_text())["tie_word_embeddings"] is False
    ours = load_output_tensors(result.output)
    ref = peft_merged_state(tied_model_dir, ckpt)
    assert torch.equal(ours["lm_head.weight"], ref["lm_head.weight"])
    base = load_output_tensors(tied_model_dir)
    assert torch.equal(ours["model.embed_tokens.weight"], base["model.embed_tokens.weight"])
    trained = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(tied_model_dir), dtype=torch.float32), str(ckpt)).eval()
    merged = AutoModelForCausalLM.from_pretrained(str(result.output), dtype=torch.float32).eval()
    ids = torch.tensor([[1, 7, 30, 99, 5]])
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, trained(input_ids=ids).logits, atol=1e-4)


def test_tied_embeddings_lora_only_stays_tied(tied_model_dir, tmp_path):
    run = peft_run(tied_model_dir, tmp_path / "run", {1: 1.0})
    result = merge(run.config, output=tmp_path / "m")
    ours = load_output_tensors(result.output)
    assert "lm_head.weight" not in ours
    assert json.loads((result.output / "config.json").read_text())["tie_word_embeddings"] is True
    assert_equal_to_peft(result.output, peft_merged_state(tied_model_dir, run.output_dir / "checkpoint-1"))


def test_sharded_base_in_sharded_output_out_loads_with_transformers(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    base = reshard(tiny_model_dir, tmp_path / "sharded-base", "1MB")
    assert len(list(base.glob("model-*.safetensors"))) >= 3
    run = peft_run(base, tmp_path / "run", {1: 1.0})
    result = merge(run.config, output=tmp_path / "m", max_shard_size="1MB", dtype="float32")
    shards = result.report["shards"]
    assert len(shards) >= 3 and all((result.output / s).is_file() for s in shards)
    index = json.loads((result.output / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    assert all((result.output / s).stat().st_size <= 1_000_000 + 300_000 for s in shards)
    ckpt = run.output_dir / "checkpoint-1"
    assert_equal_to_peft(result.output, peft_merged_state(base, ckpt))
    model = AutoModelForCausalLM.from_pretrained(str(result.output), dtype=torch.float32)
    ids = torch.tensor([[1, 5, 9, 42]])
    from peft import PeftModel

    ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32), str(ckpt))
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, ref(input_ids=ids).logits, atol=1e-4)


def test_bfloat16_output(three_ckpts, tmp_path):
    result = merge(three_ckpts.config, output=tmp_path / "m", dtype="bfloat16")
    ours = load_output_tensors(result.output)
    assert all(t.dtype == torch.bfloat16 for t in ours.values())
    ref = peft_merged_state(three_ckpts.base_model, three_ckpts.output_dir / "checkpoint-4")
    for name, t in ours.items():
        assert torch.equal(t, ref[name].to(torch.bfloat16)), name  # one rounding, as PEFT then cast
    assert json.loads((result.output / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_tokenizer_bigger_than_embedding_gets_mean_rows(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    run = peft_run(tiny_model_dir, tmp_path / "run", {1: 1.0})
    ckpt = run.output_dir / "checkpoint-1"
    tok = AutoTokenizer.from_pretrained(str(ckpt))
    old = len(tok)
    tok.add_tokens(["<|qa|>", "<|qb|>", "<|qc|>"])
    tok.save_pretrained(str(ckpt))
    result = merge(run.config, output=tmp_path / "m")
    assert result.report["resized_vocab"] == {"from": old, "to": old + 3, "new_rows": {
        "model.embed_tokens.weight": SAMPLED, "lm_head.weight": SAMPLED}}
    assert result.report["warnings"] == []
    ours = load_output_tensors(result.output)
    ref = peft_merged_state(tiny_model_dir, ckpt)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        grown = ours[name]
        assert grown.shape[0] == old + 3
        assert torch.equal(grown[:old], ref[name])
        new = grown[old:]
        mean = ref[name].mean(0)
        assert (new - mean).abs().max() < 1e-3  # N(mean, 1e-9 cov): within noise of the mean
        assert not torch.equal(new[0], new[1])
    assert json.loads((result.output / "config.json").read_text())["vocab_size"] == old + 3
    assert len(AutoTokenizer.from_pretrained(str(result.output))) == old + 3


# ------------------------------------------------------------------------------- error cases


def run_cli(*args, cwd: Path | None = None, python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run([python, str(CLI), *map(str, args)], capture_output=True, text=True,
                          env=offline_env(), cwd=cwd, timeout=300)


def assert_fails_cleanly(config: Path, out: Path, needle: str, *extra) -> None:
    proc = run_cli(config, "--output", out, *extra)
    assert proc.returncode != 0, proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and needle in last, proc.stderr
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_error_no_checkpoints(tiny_model_dir, tmp_path):
    out_dir = tmp_path / "out" / "empty-run"
    out_dir.mkdir(parents=True)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"base_model": str(tiny_model_dir), "output_dir": str(out_dir), "adapter": "lora"}))
    assert_fails_cleanly(cfg, tmp_path / "m", "no checkpoint-*")


def test_error_tensor_in_two_base_shards(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from quantummind.merge.merge import open_base

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    tensors = load_file(base / "model.safetensors")
    (base / "model.safetensors").rename(base / "model-00001-of-00002.safetensors")
    save_file({"model.norm.weight": tensors["model.norm.weight"]}, base / "model-00002-of-00002.safetensors")
    weight_map = {n: "model-00001-of-00002.safetensors" for n in tensors}
    weight_map["model.norm.weight"] = "model-00002-of-00002.safetensors"
    (base / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    with pytest.raises(MergeError, match="model.norm.weight is in both model-00001-of-00002.safetensors"):
        open_base(base)


def test_error_no_eval_loss(tiny_model_dir, tmp_path):
    run = peft_run(tiny_model_dir, tmp_path / "run", {1: None, 2: None})
    assert_fails_cleanly(run.config, tmp_path / "m", "set a validation set")
    proc = run_cli(run.config, "--output", tmp_path / "m2", "--checkpoint", "last")
    assert proc.returncode == 0, proc.stderr
    # checkpoint-2's weights (the highest step), not checkpoint-1's
    assert_equal_to_peft(tmp_path / "m2", peft_merged_state(tiny_model_dir, run.output_dir / "checkpoint-2"))
    first = peft_merged_state(tiny_model_dir, run.output_dir / "checkpoint-1")
    ours = load_output_tensors(tmp_path / "m2")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert (ours[name] - first[name]).abs().max() > 1e-3


def test_error_nan_loss(three_ckpts, tmp_path):
    run = copy_run(three_ckpts, tmp_path / "run")
    state = run.output_dir / "checkpoint-6" / "trainer_state.json"
    data = json.loads(state.read_text())
    data["log_history"][-1]["eval_loss"] = math.nan
    state.write_text(json.dumps(data))
    assert_fails_cleanly(run.config, tmp_path / "m", "NaN")


def test_error_checkpoint_without_adapter_weights(three_ckpts, tmp_path):
    run = copy_run(three_ckpts, tmp_path / "run")
    (run.output_dir / "checkpoint-4" / "adapter_model.safetensors").unlink()
    assert_fails_cleanly(run.config, tmp_path / "m", "no adapter_model.safetensors")


def test_error_architecture_mismatch(three_ckpts, tmp_path):
    from quantummind.tiny_model import TinyModelSpec, build_tiny_model

    other = build_tiny_model(tmp_path / "other", spec=TinyModelSpec(intermediate_size=384))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"base_model": str(other), "output_dir": str(three_ckpts.output_dir),
                                   "adapter": "lora"}))
    assert_fails_cleanly(cfg, tmp_path / "m", "architecture mismatch")


def test_error_smaller_trained_vocab(tied_model_dir, tmp_path):
    run = peft_run(tied_model_dir, tmp_path / "run", {1: 1.0}, lora={"modules_to_save": ["embed_tokens"]})
    # Pretend the base grew after training: the adapter's full embedding now has fewer rows.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    bigger = tmp_path / "bigger-base"
    model = AutoModelForCausalLM.from_pretrained(str(tied_model_dir), dtype=torch.float32)
    model.resize_token_embeddings(model.get_input_embeddings().weight.shape[0] + 4, mean_resizing=False)
    model.save_pretrained(str(bigger))
    AutoTokenizer.from_pretrained(str(tied_model_dir)).save_pretrained(str(bigger))
    cfg = yaml.safe_load(run.config.read_text())
    cfg["base_model"] = str(bigger)
    run.config.write_text(yaml.safe_dump(cfg))
    assert_fails_cleanly(run.config, tmp_path / "m", "smaller than the base embedding")
    proc = run_cli(run.config, "--output", tmp_path / "m2", "--allow-vocab-shrink")
    assert proc.returncode == 0, proc.stderr
    # Shrunk to the trained rows: the adapter's embedding (PEFT on the smaller base it was trained on).
    rows = json.loads((tied_model_dir / "config.json").read_text())["vocab_size"]
    ours = load_output_tensors(tmp_path / "m2")
    ref = peft_merged_state(tied_model_dir, run.output_dir / "checkpoint-1")
    assert ours["model.embed_tokens.weight"].shape == (rows, ref["model.embed_tokens.weight"].shape[1])
    assert torch.equal(ours["model.embed_tokens.weight"], ref["model.embed_tokens.weight"])
    assert "lm_head.weight" not in ours  # still tied: lm_head is the shrunk embedding
    cfg = json.loads((tmp_path / "m2" / "config.json").read_text())
    assert cfg["vocab_size"] == rows and cfg["tie_word_embeddings"] is True
    report = json.loads((tmp_path / "m2" / "merge_report.json").read_text())
    assert report["resized_vocab"] == {"from": rows + 4, "to": rows, "new_rows": {}}


def test_refuses_non_empty_output_without_force(three_ckpts, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = run_cli(three_ckpts.config, "--output", out)
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert (out / "keep.txt").read_text() == "mine"
    proc = run_cli(three_ckpts.config, "--output", out, "--force")  # no merge wrote it: kept
    assert proc.returncode == 2 and "no merge wrote it" in proc.stderr
    assert (out / "keep.txt").read_text() == "mine"
    (out / "merge_report.json").write_text("{}")  # an earlier merge's output is replaced
    proc = run_cli(three_ckpts.config, "--output", out, "--force")
    assert proc.returncode == 0, proc.stderr
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert "->checkpoint-4" in proc.stderr.replace(" ", "")  # the table, choice marked


@pytest.mark.parametrize("where", ["merge", "writer"])
def test_interrupt_or_write_failure_leaves_nothing(where, three_ckpts, tmp_path, monkeypatch):
    """Ctrl-C in the merge loop, or a disk error in the writer thread, after some tensors were
    already written: no output dir and no temporary dir remain."""
    import importlib

    merge_mod = importlib.import_module("quantummind.merge.merge")  # the module, not the function
    calls = {"n": 0}
    if where == "merge":
        real = merge_mod._produce

        def flaky(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 5:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(merge_mod, "_produce", flaky)
        expected = KeyboardInterrupt
    else:
        real = merge_mod.SafetensorsWriter.write

        def flaky(self, name, tensor):
            calls["n"] += 1
            if calls["n"] == 5:
                raise OSError(28, "No space left on device")
            return real(self, name, tensor)

        monkeypatch.setattr(merge_mod.SafetensorsWriter, "write", flaky)
        expected = MergeError
    out = tmp_path / "m"
    with pytest.raises(expected):
        merge(three_ckpts.config, output=out)
    assert calls["n"] == 5 and list(tmp_path.iterdir()) == []


def test_bad_input_errors(three_ckpts, tmp_path):
    with pytest.raises(MergeError, match="not found"):
        merge(tmp_path / "missing.yaml")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"base_model": "no-such-org/no-such-model", "output_dir": str(three_ckpts.output_dir),
                                   "adapter": "lora"}))
    with pytest.raises(MergeError, match="not in the HF cache"):
        merge(cfg, output=tmp_path / "m")
    cfg.write_text(yaml.safe_dump({"base_model": str(three_ckpts.base_model), "output_dir": "x", "adapter": None}))
    with pytest.raises(MergeError, match="only lora/qlora"):
        merge(cfg)
    proc = run_cli(three_ckpts.config, "--output", tmp_path / "m", "--max-shard-size", "lots")
    assert proc.returncode == 2 and "bad size" in proc.stderr


def test_merge_path_imports_no_training_stack():
    code = ("import sys, quantummind.merge.merge, quantummind.merge.verify; "
            "bad = [m for m in ('transformers', 'peft', 'axolotl', 'bitsandbytes', 'awq') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_wrong_environment_one_line_error(tmp_path):
    system_python = shutil.which("python3", path="/usr/bin:/usr/local/bin:/root/.pyenv/shims")
    if not system_python or Path(system_python).resolve() == Path(sys.executable).resolve():
        pytest.skip("no second interpreter to play the wrong environment")
    proc = run_cli(tmp_path / "c.yaml", python=system_python, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and ".venv" in lines[0], proc.stderr


def test_hub_id_resolves_through_local_cache(three_ckpts, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    snap = cache / "models--qm--tiny-qwen2" / "snapshots" / "0123abc"
    shutil.copytree(three_ckpts.base_model, snap)
    (cache / "models--qm--tiny-qwen2" / "refs").mkdir()
    (cache / "models--qm--tiny-qwen2" / "refs" / "main").write_text("0123abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"base_model": "qm/tiny-qwen2", "output_dir": str(three_ckpts.output_dir),
                                   "adapter": "lora"}))
    result = merge(cfg, output=tmp_path / "m")
    assert result.report["base_model"] == "qm/tiny-qwen2" and result.report["base_model_path"] == str(snap)


def test_relative_paths_resolve_against_cwd(three_ckpts, tmp_path, monkeypatch):
    """As axolotl does: base_model/output_dir relative to the directory the command runs in."""
    work = tmp_path / "proj"
    shutil.copytree(three_ckpts.base_model, work / "models" / "tiny")
    shutil.copytree(three_ckpts.output_dir, work / "ckpts" / "my-run")
    (work / "cfg.yaml").write_text("base_model: ./models/tiny\noutput_dir: ckpts/my-run\nadapter: lora\n")
    (work / "cfg2.yaml").write_text("base_model: [unclosed\n")
    proc = run_cli("cfg.yaml", "--output", "merged/out", cwd=work)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((work / "merged" / "out" / "merge_report.json").read_text())
    assert report["checkpoint"] == str(work / "ckpts" / "my-run" / "checkpoint-4")
    proc = run_cli("cfg2.yaml", cwd=work)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "YAML" in proc.stderr
