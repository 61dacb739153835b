"""What kind of tokenizer a config trains with: from tokenizer.json on disk, else by family name."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

# Family -> (byte-level BPE?, special tokens the released tokenizer already has).
_FAMILIES: dict[str, tuple[bool, frozenset[str]]] = {
    "qwen2": (True, frozenset({"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>",
                               "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>",
                               "<|file_sep|>", "<|object_ref_start|>", "<|object_ref_end|>",
                               "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
                               "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
                               "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>"})),
    "llama3": (True, frozenset({"<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|eom_id|>",
                                "<|start_header_id|>", "<|end_header_id|>", "<|python_tag|>",
                                "<|finetune_right_pad_id|>"})),
    "gpt2": (True, frozenset({"<|endoftext|>"})),
    "llama2": (False, frozenset({"<s>", "</s>", "<unk>"})),
    "mistral": (False, frozenset({"<s>", "</s>", "<unk>"})),
    "gemma": (False, frozenset({"<bos>", "<eos>", "<unk>", "<pad>", "<start_of_turn>", "<end_of_turn>"})),
}
_NAME_PATTERNS = [
    (r"qwen(2|2\.5|3)|qwq|tiny-qwen", "qwen2"),
    (r"llama-?3|llama3", "llama3"),
    (r"gpt2|starcoder|deepseek-coder", "gpt2"),
    (r"llama-?2|codellama", "llama2"),
    (r"mistral|mixtral", "mistral"),
    (r"gemma", "gemma"),
]


@dataclass
class TokenizerInfo:
    family: str | None
    byte_level: bool | None
    source: str  # "disk:<path>", "name", or "unknown"
    vocab: set[str] = field(default_factory=set)  # tokens known to exist (full vocab when on disk)

    def has_token(self, token: str) -> bool | None:
        """True/False when known; None when we cannot tell (hub model, unknown family)."""
        if self.source.startswith("disk:") or token in self.vocab:
            return token in self.vocab
        return None


def family_from_name(name: str) -> str | None:
    lowered = name.lower()
    for pattern, family in _NAME_PATTERNS:
        if re.search(pattern, lowered):
            return family
    return None


def _from_tokenizer_json(path: Path, name: str) -> TokenizerInfo:
    data = json.loads(path.read_text(encoding="utf-8"))
    model = data.get("model") or {}
    blob = json.dumps([data.get("pre_tokenizer"), data.get("decoder")])
    byte_level = model.get("type") == "BPE" and '"ByteLevel"' in blob
    vocab = set((model.get("vocab") or {}).keys()) | {t["content"] for t in data.get("added_tokens", [])}
    return TokenizerInfo(family_from_name(name), byte_level, f"disk:{path}", vocab)


def tokenizer_info(cfg: dict) -> TokenizerInfo:
    source = str(cfg.get("tokenizer_config") or cfg.get("base_model") or "")
    local = Path(source) / "tokenizer.json"
    if local.is_file():
        return _from_tokenizer_json(local, source)
    family = family_from_name(source)
    if family is None:
        return TokenizerInfo(None, None, "unknown")
    byte_level, specials = _FAMILIES[family]
    return TokenizerInfo(family, byte_level, "name", set(specials))
