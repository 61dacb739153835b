"""GPU memory estimate for a LoRA/QLoRA run, from the model's shape alone (no download).

Shapes come from config.json when base_model is a local directory, else from a small table of
the architectures this project trains. The estimate is deliberately simple and additive, so a
user can see which term to cut: quantized base weights + LoRA weights, their gradients and the
optimizer state + activations at the configured micro batch and sequence length + logits
(the loss upcasts them to fp32; with a 150k vocabulary this is often the biggest activation).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GIB = 1024**3


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool
    attention_bias: bool = False
    head_dim: int | None = None
    source: str = "table"

    @property
    def hd(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    def linear_dims(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each decoder-layer projection."""
        h, i, hd = self.hidden_size, self.intermediate_size, self.hd
        q, kv = self.num_attention_heads * hd, self.num_key_value_heads * hd
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def layer_linear_params(self) -> int:
        return sum(a * b for a, b in self.linear_dims().values())

    def layer_other_params(self) -> int:
        """Norm weights and q/k/v biases (Qwen2 has them)."""
        dims = self.linear_dims()
        bias = sum(dims[m][1] for m in ("q_proj", "k_proj", "v_proj")) if self.attention_bias else 0
        return 2 * self.hidden_size + bias

    def embedding_params(self) -> int:
        """embed_tokens plus lm_head (once when tied)."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    def num_parameters(self) -> int:
        per_layer = self.layer_linear_params() + self.layer_other_params()
        return self.num_hidden_layers * per_layer + self.embedding_params() + self.hidden_size


# Published config.json values of the models this project's configs name.
_QWEN25_7B = ModelShape(3584, 18944, 28, 28, 4, 152064, False, attention_bias=True)
_LLAMA31_8B = ModelShape(4096, 14336, 32, 32, 8, 128256, False)
KNOWN_SHAPES: dict[str, ModelShape] = {
    "qwen2.5-coder-7b": _QWEN25_7B,
    "qwen2.5-7b": _QWEN25_7B,
    "qwen2.5-coder-1.5b": ModelShape(1536, 8960, 28, 12, 2, 151936, True, attention_bias=True),
    "qwen2.5-coder-14b": ModelShape(5120, 13824, 48, 40, 8, 152064, False, attention_bias=True),
    "llama-3.1-8b": _LLAMA31_8B,
    "meta-llama-3.1-8b": _LLAMA31_8B,
    "llama-3-8b": _LLAMA31_8B,
    "meta-llama-3-8b": _LLAMA31_8B,
    "llama-3.2-3b": ModelShape(3072, 8192, 28, 24, 8, 128256, True),
    "llama-3.2-1b": ModelShape(2048, 8192, 16, 32, 8, 128256, True),
}


def shape_from_config_json(path: Path) -> ModelShape:
    c = json.loads(path.read_text(encoding="utf-8"))
    c = c.get("text_config", c)
    heads = int(c["num_attention_heads"])
    return ModelShape(
        hidden_size=int(c["hidden_size"]), intermediate_size=int(c["intermediate_size"]),
        num_hidden_layers=int(c["num_hidden_layers"]), num_attention_heads=heads,
        num_key_value_heads=int(c.get("num_key_value_heads") or heads),
        vocab_size=int(c["vocab_size"]), tie_word_embeddings=bool(c.get("tie_word_embeddings", False)),
        attention_bias=bool(c.get("attention_bias", c.get("model_type") == "qwen2")),
        head_dim=c.get("head_dim"), source=str(path),
    )


def shape_for(base_model: str) -> ModelShape | None:
    """Shape of `base_model`: its config.json if it is a local dir, else the built-in table."""
    local = Path(base_model)
    if (local / "config.json").is_file():
        return shape_from_config_json(local / "config.json")
    name = base_model.rstrip("/").split("/")[-1].lower()
    name = re.sub(r"-(instruct|chat|base|hf)$", "", name)
    for key in sorted(KNOWN_SHAPES, key=len, reverse=True):
        if name == key or name.startswith(key + "-"):
            return KNOWN_SHAPES[key]
    return None


@dataclass(frozen=True)
class MemoryEstimate:
    """GiB per term for one GPU (data parallel: every GPU holds all of it)."""
    base_weights_gib: float
    lora_weights_gib: float
    gradients_gib: float
    optimizer_gib: float
    activations_gib: float
    logits_gib: float
    overhead_gib: float
    total_gib: float
    num_parameters: int
    trainable_parameters: int
    assumptions: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _weight_bytes_per_param(cfg: dict[str, Any]) -> float:
    if cfg.get("load_in_4bit") or cfg.get("adapter") == "qlora":
        return 0.5 + 4 / 64 * 0.25 + 2 / 256 / 64  # NF4 + double-quantized absmax per 64-block
    if cfg.get("load_in_8bit"):
        return 1.0 + 4 / 4096
    return 2.0 if (cfg.get("bf16") or cfg.get("fp16")) else 4.0


def _optimizer_bytes_per_param(optimizer: str) -> float:
    opt = optimizer.lower()
    if "8bit" in opt:
        return 2.0
    if "adafactor" in opt:
        return 4.0
    if opt.startswith("sgd"):
        return 4.0
    return 8.0  # Adam/AdamW: two fp32 moments


def lora_parameters(shape: ModelShape, r: int, targets: list[str]) -> int:
    dims = shape.linear_dims()
    per_layer = sum(r * (dims[t][0] + dims[t][1]) for t in targets if t in dims)
    return per_layer * shape.num_hidden_layers


def estimate_memory(cfg: dict[str, Any], shape: ModelShape) -> MemoryEstimate:
    """Estimate peak GPU memory of one training process for `cfg` (an axolotl config dict)."""
    act_bytes = 2 if (cfg.get("bf16") or cfg.get("fp16")) else 4  # non-quantized weights too
    n_params = shape.num_parameters()
    weight_bytes = _weight_bytes_per_param(cfg)
    mbs, seq = int(cfg.get("micro_batch_size") or 1), int(cfg.get("sequence_len") or 2048)
    checkpointed = bool(cfg.get("gradient_checkpointing")
                        or (cfg.get("fsdp_config") or {}).get("activation_checkpointing"))
    linear = shape.num_hidden_layers * shape.layer_linear_params()
    rest = n_params - linear
    base = linear * weight_bytes + rest * act_bytes
    adapter = cfg.get("adapter")
    if adapter in ("lora", "qlora"):
        targets = list(cfg.get("lora_target_modules") or [])
        if cfg.get("lora_target_linear") or not targets:
            targets = list(shape.linear_dims())
        trainable = lora_parameters(shape, int(cfg.get("lora_r") or 8), targets)
        extra = [m for m in (cfg.get("lora_modules_to_save") or []) if m in ("embed_tokens", "lm_head")]
        trainable += len(extra) * shape.vocab_size * shape.hidden_size
        lora_w, grads = trainable * 4.0, trainable * 4.0  # PEFT keeps adapters in fp32
    else:
        trainable = n_params
        lora_w, grads = 0.0, trainable * float(act_bytes)
    optim = trainable * _optimizer_bytes_per_param(str(cfg.get("optimizer") or "adamw_torch"))

    tokens = mbs * seq
    h, i, hd = shape.hidden_size, shape.intermediate_size, shape.hd
    kv = shape.num_key_value_heads * hd
    per_layer_full = tokens * (11 * h + 2 * kv + 5 * i) * act_bytes
    flash = cfg.get("flash_attention") or str(cfg.get("attn_implementation") or "").startswith(("flash", "sdpa"))
    if not flash:
        per_layer_full += mbs * shape.num_attention_heads * seq * seq * act_bytes * 2
    if checkpointed:
        activations = shape.num_hidden_layers * tokens * h * act_bytes + per_layer_full
    else:
        activations = shape.num_hidden_layers * per_layer_full
    logits = tokens * shape.vocab_size * (act_bytes + 4 + 4)  # logits, fp32 upcast, its grad
    subtotal = base + lora_w + grads + optim + activations + logits
    overhead = 1.0 * GIB + 0.05 * subtotal  # CUDA context, allocator fragmentation
    g = lambda b: round(b / GIB, 2)  # noqa: E731
    return MemoryEstimate(
        base_weights_gib=g(base), lora_weights_gib=g(lora_w), gradients_gib=g(grads),
        optimizer_gib=g(optim), activations_gib=g(activations), logits_gib=g(logits),
        overhead_gib=g(overhead), total_gib=g(subtotal + overhead),
        num_parameters=n_params, trainable_parameters=trainable,
        assumptions=(f"micro_batch_size x sequence_len = {tokens} tokens, "
                     f"{'checkpointed' if checkpointed else 'stored'} activations, "
                     f"weights {weight_bytes:.3f} B/param, shape from {shape.source}"),
    )


@dataclass(frozen=True)
class GpuInfo:
    name: str
    total_gib: float


def visible_gpu() -> GpuInfo | None:
    """The first visible CUDA device, or None (CPU-only host, or torch not installed)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return GpuInfo(name=props.name, total_gib=round(props.total_memory / GIB, 2))
