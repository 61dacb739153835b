"""Build small Qwen2 models offline, so tests, the demo and benchmarks never touch a model hub.

Two builders:
- `build_tiny_model`: a random-init Qwen2ForCausalLM plus a byte-level BPE tokenizer trained
  on a Qiskit-flavoured corpus, with ChatML special tokens and chat template. Small enough to
  train through axolotl and serve through vLLM on two CPU cores.
- `build_synthetic_model`: a Qwen2-shaped bf16 checkpoint of a requested size written shard by
  shard (never held whole in memory), for the merge benchmark.

Both are deterministic for a given seed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from evaluation.prompts import CONSTRAINTS, SYSTEM_PROMPT, user_prompt_text  # the seed's wording, defined once

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"

# ChatML, as Qwen2.5 renders it for plain (tool-free) conversations.
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_HAMILTONIANS = ["XY chain", "Heisenberg chain", "Transverse-field Ising model", "XXZ chain"]

_SNIPPETS = [
    """from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector

def build_ansatz(num_qubits: int, reps: int = 2) -> QuantumCircuit:
    theta = ParameterVector("theta", num_qubits * (reps + 1))
    qc = QuantumCircuit(num_qubits)
    k = 0
    for _ in range(reps):
        for q in range(num_qubits):
            qc.ry(theta[k], q)
            k += 1
        for q in range(num_qubits - 1):
            qc.cx(q, q + 1)
    for q in range(num_qubits):
        qc.ry(theta[k], q)
        k += 1
    return qc

qc = build_ansatz({n})
""",
    """from qiskit import QuantumCircuit
from qiskit.circuit import Parameter

qc = QuantumCircuit({n})
alpha = Parameter("alpha")
beta = Parameter("beta")
for q in range({n}):
    qc.h(q)
for q in range(0, {n} - 1, 2):
    qc.rzz(alpha, q, q + 1)
for q in range({n}):
    qc.rx(beta, q)
""",
    """from qiskit.circuit.library import efficient_su2
from qiskit.quantum_info import SparsePauliOp

ansatz = efficient_su2({n}, su2_gates=["ry", "rz"], entanglement="linear", reps=2)
hamiltonian = SparsePauliOp.from_sparse_list(
    [("ZZ", [i, i + 1], 1.0) for i in range({n} - 1)] + [("X", [i], 1.0) for i in range({n})],
    num_qubits={n},
)
print(ansatz.num_parameters)
""",
    """import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector

params = ParameterVector("p", 2 * {n})
circuit = QuantumCircuit({n})
for i in range({n}):
    circuit.ry(params[i], i)
    circuit.rz(params[{n} + i], i)
for i in range({n} - 1):
    circuit.cz(i, i + 1)
circuit.measure_all()
""",
]


def tokenizer_corpus() -> list[str]:
    """A few hundred lines of the text the tiny model will see: prompts and Qiskit code."""
    lines: list[str] = [SYSTEM_PROMPT]
    for ham in _HAMILTONIANS:
        for n in (2, 3, 4, 5, 6, 7, 8, 9, 10):
            for c in CONSTRAINTS:
                lines.append(user_prompt_text(ham, n, c))
    for snippet in _SNIPPETS:
        for n in (2, 4, 6, 8):
            lines.append(snippet.format(n=n))
    lines.append(
        "This ansatz alternates single-qubit rotations with a linear chain of CX gates, "
        "so every qubit is entangled with its neighbour while the depth stays shallow."
    )
    lines.append("```python\n```\n")
    return lines


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the tiny model. head_dim must be 64: vLLM's CPU attention rejects 16."""

    vocab_size: int = 1024  # BPE target; a small corpus may stop earlier (the model follows the tokenizer)
    hidden_size: int = 256
    intermediate_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def train_tokenizer(vocab_size: int, corpus: list[str] | None = None):
    """Byte-level BPE (like Qwen2/Llama 3: no unk_token needed) wrapped as a fast HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus or tokenizer_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=["<|im_start|>"],
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def save_tokenizer(tokenizer, out: Path) -> None:
    """Save as Qwen2.5 ships it: class Qwen2Tokenizer and an explicit null unk_token.

    Without the explicit null, Qwen2Tokenizer defaults unk_token to <|endoftext|>.
    """
    tokenizer.save_pretrained(out)
    cfg_path = Path(out) / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update({"tokenizer_class": "Qwen2Tokenizer", "unk_token": None, "bos_token": None})
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def _qwen2_config(spec: TinyModelSpec, vocab_size: int, tokenizer, dtype: str):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=spec.tie_word_embeddings,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS_TOKEN),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN),
        use_sliding_window=False,
        dtype=dtype,
    )


BUILD_INFO = "tiny_model_spec.json"


def _build_info(seed: int, spec: TinyModelSpec) -> dict:
    # The builder's source and the corpus it trains the tokenizer on (partly evaluation.prompts)
    # are part of the key: a change to either means a new model.
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update("\n".join(tokenizer_corpus()).encode())
    source = digest.hexdigest()[:16]
    return {"seed": seed, "builder": source, **asdict(spec)}


def is_current_build(out_dir: str | Path, *, seed: int = 0, spec: TinyModelSpec | None = None) -> bool:
    """True when `out_dir` holds a complete build from this builder with the same seed and shape."""
    out = Path(out_dir)
    try:
        info = json.loads((out / BUILD_INFO).read_text())
    except (OSError, ValueError):
        return False
    complete = (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    return complete and info == _build_info(seed, spec or TinyModelSpec())


def build_tiny_model(out_dir: str | Path, *, seed: int = 0, spec: TinyModelSpec | None = None) -> Path:
    """Write a random-init Qwen2ForCausalLM, its tokenizer and chat template to `out_dir`.

    The directory appears whole or not at all (built beside it, then renamed).
    """
    spec = spec or TinyModelSpec()
    final = Path(out_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_dir(final) as out:
        _write_tiny_model(out, seed, spec)
    return final


@contextlib.contextmanager
def _atomic_dir(final: Path):
    """Yield a temporary sibling of `final`; replace `final` with it only on success."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary model dir
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_tiny_model(out: Path, seed: int, spec: TinyModelSpec) -> None:
    import torch
    from transformers import GenerationConfig, Qwen2ForCausalLM

    tokenizer = train_tokenizer(spec.vocab_size)
    # Embedding rows == tokenizer size (as in Llama 3: 128256 both), so an added token really
    # grows the vocabulary — the situation the merge script's resize exists for.
    vocab = len(tokenizer)
    config = _qwen2_config(spec, vocab, tokenizer, dtype="float32")
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        do_sample=True,
        temperature=0.7,
        max_new_tokens=256,
    )
    model.save_pretrained(out, safe_serialization=True)
    save_tokenizer(tokenizer, out)
    (out / BUILD_INFO).write_text(json.dumps(_build_info(seed, spec), indent=2) + "\n")
    logger.info("tiny model built (%d parameters)", model.num_parameters())


# ---------------------------------------------------------------------------------------------
# Large synthetic model for the merge benchmark


@dataclass(frozen=True)
class SyntheticModel:
    path: Path
    num_parameters: int
    num_shards: int
    total_bytes: int
    largest_shard_bytes: int


def _synthetic_tensor_shapes(spec: TinyModelSpec, vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every tensor of a Qwen2ForCausalLM, in checkpoint order."""
    h, i, hd = spec.hidden_size, spec.intermediate_size, spec.head_dim
    q_out, kv_out = spec.num_attention_heads * hd, spec.num_key_value_heads * hd
    shapes: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, h))]
    for layer in range(spec.num_hidden_layers):
        p = f"model.layers.{layer}"
        shapes += [
            (f"{p}.input_layernorm.weight", (h,)),
            (f"{p}.self_attn.q_proj.weight", (q_out, h)),
            (f"{p}.self_attn.q_proj.bias", (q_out,)),
            (f"{p}.self_attn.k_proj.weight", (kv_out, h)),
            (f"{p}.self_attn.k_proj.bias", (kv_out,)),
            (f"{p}.self_attn.v_proj.weight", (kv_out, h)),
            (f"{p}.self_attn.v_proj.bias", (kv_out,)),
            (f"{p}.self_attn.o_proj.weight", (h, q_out)),
            (f"{p}.post_attention_layernorm.weight", (h,)),
            (f"{p}.mlp.gate_proj.weight", (i, h)),
            (f"{p}.mlp.up_proj.weight", (i, h)),
            (f"{p}.mlp.down_proj.weight", (h, i)),
        ]
    shapes.append(("model.norm.weight", (h,)))
    if not spec.tie_word_embeddings:
        shapes.append(("lm_head.weight", (vocab, h)))
    return shapes


def synthetic_spec_for_size(size_gb: float, *, bytes_per_param: int = 2) -> TinyModelSpec:
    """A Qwen2 shape (hidden 1024, head_dim 64) whose layer count reaches about `size_gb`."""
    base = TinyModelSpec(
        vocab_size=32768, hidden_size=1024, intermediate_size=2816,
        num_attention_heads=16, num_key_value_heads=4, num_hidden_layers=1,
    )
    target = size_gb * 1e9 / bytes_per_param
    shapes = _synthetic_tensor_shapes(base, base.vocab_size)
    fixed = sum(math.prod(s) for n, s in shapes if ".layers." not in n)
    per_layer = sum(math.prod(s) for n, s in shapes if ".layers." in n)
    layers = max(1, math.ceil((target - fixed) / per_layer))
    return TinyModelSpec(**{**asdict(base), "num_hidden_layers": layers})


def build_synthetic_model(
    out_dir: str | Path, *, size_gb: float, num_shards: int = 3, seed: int = 0, dtype: str = "bfloat16"
) -> SyntheticModel:
    """Write a random Qwen2-shaped checkpoint of about `size_gb` in `num_shards` safetensors files.

    Tensors are generated and written one shard at a time, so peak memory is one shard.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import GenerationConfig

    torch_dtype = getattr(torch, dtype)
    item = torch.empty((), dtype=torch_dtype).element_size()
    spec = synthetic_spec_for_size(size_gb, bytes_per_param=item)
    final = Path(out_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_dir(final) as out:
        tokenizer = train_tokenizer(1024)
        config = _qwen2_config(spec, spec.vocab_size, tokenizer, dtype=dtype)
        config.save_pretrained(out)
        GenerationConfig(eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id).save_pretrained(out)
        save_tokenizer(tokenizer, out)

        shapes = _synthetic_tensor_shapes(spec, spec.vocab_size)
        total = sum(math.prod(s) for _, s in shapes) * item
        budget = math.ceil(total / num_shards)
        groups: list[list[tuple[str, tuple[int, ...]]]] = [[]]
        used = 0
        for name, shape in shapes:
            nbytes = math.prod(shape) * item
            if groups[-1] and used + nbytes > budget and len(groups) < num_shards:
                groups.append([])
                used = 0
            groups[-1].append((name, shape))
            used += nbytes

        gen = torch.Generator().manual_seed(seed)
        weight_map: dict[str, str] = {}
        largest = 0
        for idx, group in enumerate(groups, start=1):
            fname = f"model-{idx:05d}-of-{len(groups):05d}.safetensors"
            tensors = {}
            for name, shape in group:
                if name.endswith("norm.weight"):
                    t = torch.ones(shape, dtype=torch_dtype)
                else:
                    t = (torch.randn(shape, generator=gen) * 0.02).to(torch_dtype)
                tensors[name] = t
                weight_map[name] = fname
            save_file(tensors, str(out / fname), metadata={"format": "pt"})
            largest = max(largest, (out / fname).stat().st_size)
            del tensors
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        n_params = total // item
        logger.info("synthetic model: %d params, %d shards, %s", n_params, len(groups), out)
    return SyntheticModel(final, n_params, len(groups), total, largest)
