"""A PEFT LoRA adapter read lazily from adapter_model.safetensors, mapped to base tensor names.

Supports LoRA, rsLoRA (alpha/sqrt(r)), rank/alpha patterns, LoRA on embeddings, DoRA, and
full-tensor modules_to_save / saved embedding layers. Anything else is refused clearly rather
than merged wrongly.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from quantummind.merge.checkpoints import ADAPTER_WEIGHTS
from quantummind.merge.errors import MergeError
from quantummind.merge.shards import SafetensorsReader

logger = logging.getLogger(__name__)

PEFT_PREFIX = "base_model.model."
_LORA_SUFFIXES = {
    ".lora_A.weight": ("linear", "A"),
    ".lora_B.weight": ("linear", "B"),
    ".lora_embedding_A": ("embedding", "A"),
    ".lora_embedding_B": ("embedding", "B"),
    ".lora_magnitude_vector": ("dora", "m"),
}


@dataclass
class LoraModule:
    module: str  # base module name, e.g. model.layers.0.self_attn.q_proj
    kind: str = "linear"  # linear | embedding
    a_key: str | None = None
    b_key: str | None = None
    magnitude_key: str | None = None
    scaling: float = 1.0


def _pattern_value(patterns: dict, module: str, default):
    """PEFT's rank_pattern/alpha_pattern lookup: first key matching the end of the module name."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


class Adapter:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        cfg_path = self.path / "adapter_config.json"
        if not cfg_path.is_file():
            raise MergeError(f"{self.path} has no adapter_config.json")
        self.config: dict = json.loads(cfg_path.read_text())
        self._check_supported()
        self.reader = SafetensorsReader(self.path / ADAPTER_WEIGHTS)
        self.lora: dict[str, LoraModule] = {}  # base weight name -> module
        self.full: dict[str, str] = {}  # base tensor name -> adapter key holding the whole tensor
        self._index()

    @property
    def use_dora(self) -> bool:
        return bool(self.config.get("use_dora"))

    def _check_supported(self) -> None:
        c = self.config
        if c.get("peft_type", "LORA") != "LORA":
            raise MergeError(f"{self.path}: peft_type {c.get('peft_type')} is not LoRA; only LoRA/rsLoRA/DoRA merge")
        if c.get("bias", "none") != "none" or c.get("lora_bias"):
            raise MergeError(f"{self.path}: adapters with trained biases (bias={c.get('bias')!r}) are not supported")
        if c.get("fan_in_fan_out"):
            raise MergeError(f"{self.path}: fan_in_fan_out (Conv1D) adapters are not supported")
        if c.get("layer_replication") or c.get("target_parameters") or c.get("use_qalora") or c.get("use_bdlora"):
            raise MergeError(f"{self.path}: this LoRA variant (layer_replication/target_parameters/QA-LoRA) is not supported")

    def _index(self) -> None:
        for key in self.reader.names():
            if not key.startswith(PEFT_PREFIX):
                raise MergeError(f"{self.path}: unexpected adapter key {key!r} (not a PEFT causal-LM adapter)")
            rest = key[len(PEFT_PREFIX):]
            for suffix, (kind, part) in _LORA_SUFFIXES.items():
                if rest.endswith(suffix):
                    module = rest[: -len(suffix)]
                    m = self.lora.setdefault(f"{module}.weight", LoraModule(module))
                    if part == "A":
                        m.a_key, m.kind = key, kind
                    elif part == "B":
                        m.b_key, m.kind = key, kind
                    else:
                        m.magnitude_key = key
                    break
            else:
                if ".lora_" in rest:
                    raise MergeError(f"{self.path}: unsupported adapter tensor {key!r}")
                # modules_to_save / saved embedding layers: the whole trained tensor. PEFT stores
                # X.weight (the trained copy), and may add X.modules_to_save.weight (the same) and
                # X.original_module.weight (the untrained base copy, ignored).
                if ".original_module." in rest:
                    continue
                # X.base_layer.weight: an embedding PEFT saved because it is LoRA-targeted (and
                # maybe resized); its LoRA delta is added on top of it.
                name = rest.replace(".modules_to_save.", ".").replace(".base_layer.", ".")
                if ".modules_to_save." in rest or name not in self.full:
                    self.full[name] = key
        r_default = self.config.get("r", 8)
        alpha_default = self.config.get("lora_alpha", r_default)
        for m in self.lora.values():
            if m.a_key is None or m.b_key is None:
                raise MergeError(f"{self.path}: {m.module} has only one of lora_A/lora_B")
            if m.magnitude_key and not self.use_dora:
                raise MergeError(f"{self.path}: DoRA magnitude for {m.module} but use_dora is false")
            r = _pattern_value(self.config.get("rank_pattern") or {}, m.module, r_default)
            alpha = _pattern_value(self.config.get("alpha_pattern") or {}, m.module, alpha_default)
            rank_in_file = self.reader.infos[m.a_key].shape[0]
            if rank_in_file != r:
                raise MergeError(f"{self.path}: {m.module} has rank {rank_in_file} but adapter_config says r={r}")
            m.scaling = alpha / math.sqrt(r) if self.config.get("use_rslora") else alpha / r
        if self.use_dora and any(m.magnitude_key is None for m in self.lora.values() if m.kind == "linear"):
            raise MergeError(f"{self.path}: use_dora is set but lora_magnitude_vector tensors are missing")
        if not self.lora and not self.full:
            raise MergeError(f"{self.path}: adapter has no weights")

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape each touched base tensor must have (vocab rows of embeddings excepted)."""
        out: dict[str, tuple[int, ...]] = {}
        for name, m in self.lora.items():
            a = self.reader.infos[m.a_key].shape
            b = self.reader.infos[m.b_key].shape
            out[name] = (b[0], a[1]) if m.kind == "linear" else (a[1], b[0])
        for name, key in self.full.items():
            out[name] = self.reader.infos[key].shape
        return out

    def full_tensor(self, name: str) -> torch.Tensor:
        return self.reader.get(self.full[name])

    def delta(self, name: str) -> torch.Tensor:
        """scaling * B @ A in float32, in PEFT's operation order (product, then scale), so the
        merge is bit-identical to merge_and_unload."""
        m = self.lora[name]
        a = self.reader.get(m.a_key).float()
        b = self.reader.get(m.b_key).float()
        delta = (b @ a).T if m.kind == "embedding" else b @ a
        return delta.mul_(m.scaling)

    def merge_into(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        """weight + delta as float32. `weight` may be bf16/fp16 (upcast exactly on the fly) or a
        float32 buffer the caller owns."""
        m = self.lora[name]
        delta = self.delta(name)
        if weight.shape != delta.shape:
            raise MergeError(f"adapter/base architecture mismatch at {name}: base {tuple(weight.shape)}, "
                             f"adapter delta {tuple(delta.shape)}")
        if not m.magnitude_key:
            return torch.add(weight, delta, out=delta)
        magnitude = self.reader.get(m.magnitude_key).float()
        merged = torch.add(weight, delta, out=delta)
        norm = torch.linalg.norm(merged, dim=1)
        return merged.mul_((magnitude / norm).view(-1, 1))

    def close(self) -> None:
        self.reader.close()
