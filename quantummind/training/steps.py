"""How many optimizer steps a config trains for, with sample packing counted the way axolotl 0.19
counts it (`axolotl.utils.trainer.calculate_total_num_steps`): `train.py steps CONFIG`.

The count needs the real tokenizer (token lengths decide how many examples fit in a packed
sequence). Without it, pass another tokenizer with --tokenizer and read the result as an estimate.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

DEFAULT_BIN_SIZE = 200  # axolotl's sample_packing_bin_size default
DEFAULT_GROUP_SIZE = 100_000  # axolotl's sample_packing_group_size default


@dataclass
class StepCount:
    tokenizer: str
    examples: int  # train examples read
    dropped_long: int  # longer than sequence_len: axolotl drops them
    total_tokens: int  # of the kept examples
    mean_tokens: float
    chars_per_token: float  # characters of rendered chat per token (to compare tokenizers)
    sample_packing: bool
    packed_sequences: int | None  # per epoch; None without packing
    packing_efficiency: float | None  # tokens / (packed sequences x capacity)
    steps_per_epoch: int
    num_epochs: float
    total_steps: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _int(cfg: dict[str, Any], key: str, default: int) -> int:
    return int(cfg.get(key) or default)


def _attn_supports_packing(cfg: dict[str, Any]) -> bool:
    """axolotl packs micro_batch_size sequences into one row when flash attention separates them."""
    return bool(cfg.get("flash_attention")) or str(cfg.get("attn_implementation") or "").startswith("flash")


def steps_from_lengths(lengths: Sequence[int], cfg: dict[str, Any]) -> tuple[int, int | None, float | None, int]:
    """(steps per epoch, packed sequences per epoch or None, packing efficiency or None, total steps)
    for examples of these token lengths, as axolotl computes them (world size 1)."""
    mbs, gas = _int(cfg, "micro_batch_size", 1), _int(cfg, "gradient_accumulation_steps", 1)
    epochs = float(cfg.get("num_epochs") or 1)
    batch = mbs * gas
    if not cfg.get("sample_packing"):
        total = int(math.ceil(len(lengths) * epochs / batch))
        return int(math.ceil(len(lengths) / batch)), None, None, total
    import numpy as np
    from torch.utils.data import RandomSampler

    from axolotl.utils.samplers import MultipackBatchSampler

    seq_len = _int(cfg, "sequence_len", 2048)
    if _attn_supports_packing(cfg) and not cfg.get("multipack_real_batches"):
        sampler_batch, capacity = 1, mbs * seq_len
    else:
        sampler_batch, capacity = mbs, seq_len
    sampler = MultipackBatchSampler(
        RandomSampler(range(len(lengths))), batch_size=sampler_batch, batch_max_len=capacity,
        lengths=np.asarray(lengths), bin_size=_int(cfg, "sample_packing_bin_size", DEFAULT_BIN_SIZE),
        group_size=_int(cfg, "sample_packing_group_size", DEFAULT_GROUP_SIZE),
        sequential=bool(cfg.get("sample_packing_sequentially")), drop_last=True, num_processes=1)
    batches = len(sampler)
    per_epoch = max(1, batches * mbs // batch)
    total = int(math.floor(per_epoch * epochs))
    if cfg.get("dataloader_drop_last"):
        total -= int(math.ceil(epochs))
    sequences = batches * sampler_batch
    efficiency = sum(lengths) / (batches * sampler_batch * capacity) if batches else None
    return per_epoch, sequences, efficiency, total


def _rendered(tokenizer, messages: list[dict[str, str]]) -> tuple[int, int]:
    """(characters, tokens) of one chat as the tokenizer's chat template renders it."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return len(text), len(tokenizer(text, add_special_tokens=False)["input_ids"])


def count_steps(cfg: dict[str, Any], tokenizer_path: str | Path, *, field_messages: str = "messages") -> StepCount:
    """Read the config's train datasets (JSONL chats), tokenize them with `tokenizer_path`, count."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_path))
    seq_len = _int(cfg, "sequence_len", 2048)
    chars = tokens = dropped = 0
    lengths: list[int] = []
    paths = [Path(d["path"]) for d in cfg.get("datasets") or [] if isinstance(d, dict) and d.get("path")]
    if not paths:
        raise FileNotFoundError("the config has no datasets[].path to count")
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"dataset {path} not found (run fine-tuning/prepare_dataset.py first)")
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                c, n = _rendered(tok, json.loads(line)[field_messages])
                chars += c
                tokens += n
                if n > seq_len:
                    dropped += 1
                else:
                    lengths.append(n)
    if not lengths:
        raise ValueError(f"no example fits sequence_len {seq_len}")
    per_epoch, sequences, efficiency, total = steps_from_lengths(lengths, cfg)
    return StepCount(
        tokenizer=str(tokenizer_path), examples=len(lengths) + dropped, dropped_long=dropped,
        total_tokens=sum(lengths), mean_tokens=round(sum(lengths) / len(lengths), 1),
        chars_per_token=round(chars / tokens, 3), sample_packing=bool(cfg.get("sample_packing")),
        packed_sequences=sequences, packing_efficiency=None if efficiency is None else round(efficiency, 4),
        steps_per_epoch=per_epoch, num_epochs=float(cfg.get("num_epochs") or 1), total_steps=total)
