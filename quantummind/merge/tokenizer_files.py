"""The merged folder's tokenizer files, in a form every transformers reads.

axolotl saves the run's tokenizer through the transformers it runs on. transformers 5 rewrites
`tokenizer_config.json` on save: `extra_special_tokens` becomes a list (transformers 4.x expects a dict and
fails with "'list' object has no attribute 'keys'"), the chat template moves to `chat_template.jinja` (4.x
before 4.47 reads it only from `tokenizer_config.json`), and keys such as `is_local` leak in. So:

- the run changed nothing (same vocabulary, added tokens, special tokens and chat template as the base):
  the merged folder takes the **base model's tokenizer files byte for byte** (layout "base");
- the run added tokens, or changed a special token or the chat template: the base's files are the
  starting point and keep their layout; `tokenizer.json` comes from the run (it holds the new tokens),
  `tokenizer_config.json` is the base's with the run's `added_tokens_decoder` entries, special tokens and
  chat template written in (the template inside `tokenizer_config.json`, also in `chat_template.jinja` when
  the base ships one), list-valued `extra_special_tokens` as `additional_special_tokens` (layout
  "run_compatible");
- no base tokenizer to start from: the run's files as saved (layout "run").
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
)
# the special tokens a run sets (axolotl `special_tokens`) that generation and batching use; not unk_token, which
# transformers 5 fills in with its class default on save (Qwen2Tokenizer: <|endoftext|>) when the base has none
SPECIAL_KEYS = ("bos_token", "eos_token", "pad_token")
CONFIG = "tokenizer_config.json"
TEMPLATE_FILE = "chat_template.jinja"


@dataclass
class TokenizerFiles:
    layout: str  # "base" | "run_compatible" | "run"
    files: list[str]
    changes: list[str] = field(default_factory=list)  # what the run changed: added_tokens, vocab, special_tokens, chat_template
    added_tokens: list[str] = field(default_factory=list)  # contents of the tokens the run added


def _json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _content(value) -> str | None:
    """A special token as its text (tokenizer configs write it as a string or as an AddedToken dict)."""
    return value.get("content") if isinstance(value, dict) else value


def chat_template(d: Path) -> str | None:
    """The chat template a tokenizer folder carries: chat_template.jinja (transformers 5 reads it first), else
    tokenizer_config.json's (a string, or a list of named templates: the 'default' one)."""
    if (d / TEMPLATE_FILE).is_file():
        return (d / TEMPLATE_FILE).read_text()
    t = (_json(d / CONFIG) or {}).get("chat_template")
    if isinstance(t, list):
        t = next((e.get("template") for e in t if isinstance(e, dict) and e.get("name") == "default"), None)
    return t if isinstance(t, str) else None


@dataclass(frozen=True)
class _Saved:
    """A tokenizer folder, read once: tokenizer.json, tokenizer_config.json, the chat template."""
    path: Path
    tok: dict | None
    cfg: dict | None
    template: str | None

    @staticmethod
    def read(d: Path) -> "_Saved":
        return _Saved(d, _json(d / "tokenizer.json"), _json(d / CONFIG), chat_template(d))

    @property
    def added(self) -> dict[int, dict]:
        return {int(t["id"]): t for t in (self.tok or {}).get("added_tokens", []) if isinstance(t, dict) and "id" in t}

    @property
    def special(self) -> dict[str, str | None]:
        return {k: _content((self.cfg or {}).get(k)) for k in SPECIAL_KEYS}


def _run_changes(base: _Saved, run: _Saved) -> tuple[list[str], list[dict]]:
    """What the run's tokenizer changed against the base's, and the added-token entries it added."""
    base_added, run_added = base.added, run.added
    new = [t for i, t in sorted(run_added.items()) if base_added.get(i, {}).get("content") != t.get("content")]
    changes = []
    if new or set(base_added) - set(run_added):
        changes.append("added_tokens")
    if ((base.tok or {}).get("model") or {}).get("vocab") != ((run.tok or {}).get("model") or {}).get("vocab"):
        changes.append("vocab")
    if any(base.special[k] != v for k, v in run.special.items() if v is not None):
        changes.append("special_tokens")
    if run.template is not None and run.template != base.template:
        changes.append("chat_template")
    return changes, new


def _decoder_entry(t: dict) -> dict:
    return {k: bool(t.get(k, default)) for k, default in
            (("lstrip", False), ("normalized", False), ("rstrip", False), ("single_word", False), ("special", False))} \
        | {"content": t["content"]}


def _compatible_config(base_cfg: dict, run: _Saved, template: str | None) -> dict:
    cfg = dict(base_cfg)
    decoder = dict(cfg.get("added_tokens_decoder") or {})
    for i, t in sorted(run.added.items()):
        decoder[str(i)] = _decoder_entry(t)
    cfg["added_tokens_decoder"] = dict(sorted(decoder.items(), key=lambda kv: int(kv[0])))
    for k, v in run.special.items():
        if v is not None:
            cfg[k] = v
    extra = cfg.pop("extra_special_tokens", None)
    specials = list(cfg.get("additional_special_tokens") or [])
    if isinstance(extra, list):  # transformers 5's list form: 4.x reads it as a dict and fails
        specials += [_content(x) for x in extra]
    elif isinstance(extra, dict):  # the dict form (named extra tokens) both read: keep it
        cfg["extra_special_tokens"] = extra
    base_ids = {int(i) for i in (base_cfg.get("added_tokens_decoder") or {})}
    specials += [t["content"] for i, t in sorted(run.added.items()) if t.get("special") and i not in base_ids
                 and t["content"] not in {cfg.get(k) for k in SPECIAL_KEYS}]
    if specials:
        cfg["additional_special_tokens"] = list(dict.fromkeys(s for s in specials if s))
    if template is not None:
        cfg["chat_template"] = template
    return cfg


def write_tokenizer_files(base_dir: Path, run_dir: Path, out_dir: Path) -> TokenizerFiles:
    """Write the merged folder's tokenizer files into `out_dir` from the base's (`base_dir`) and the trained
    run's (`run_dir`, which may be `base_dir` when the run saved none)."""
    base_files = [f for f in TOKENIZER_FILES if (base_dir / f).is_file()]
    if run_dir.resolve() == base_dir.resolve():
        _copy(base_dir, base_files, out_dir)
        return TokenizerFiles("base", base_files)
    base = _Saved.read(base_dir)
    if not base_files or base.cfg is None:
        run_files = [f for f in TOKENIZER_FILES if (run_dir / f).is_file()]
        _copy(run_dir, run_files, out_dir)
        return TokenizerFiles("run", run_files)
    run = _Saved.read(run_dir)
    changes, new = _run_changes(base, run)
    if not changes:
        _copy(base_dir, base_files, out_dir)
        return TokenizerFiles("base", base_files)

    keep = [f for f in base_files if f not in ("tokenizer.json", CONFIG, TEMPLATE_FILE, "chat_template.json")]
    _copy(base_dir, keep, out_dir)
    files = list(keep)
    if run.tok is not None:
        shutil.copy2(run_dir / "tokenizer.json", out_dir / "tokenizer.json")
        files.append("tokenizer.json")
    template = run.template or base.template
    cfg = _compatible_config(base.cfg, run, template)
    (out_dir / CONFIG).write_text(json.dumps(cfg, indent=2, ensure_ascii=True) + "\n")
    files.append(CONFIG)
    if template is not None and (base_dir / TEMPLATE_FILE).is_file():  # the base's own layout too
        (out_dir / TEMPLATE_FILE).write_text(template)
        files.append(TEMPLATE_FILE)
    if "special_tokens_map.json" in keep:
        stm = _json(base_dir / "special_tokens_map.json") or {}
        for k in SPECIAL_KEYS:
            if cfg.get(k) is not None:
                stm[k] = cfg[k]
        if cfg.get("additional_special_tokens"):
            stm["additional_special_tokens"] = cfg["additional_special_tokens"]
        (out_dir / "special_tokens_map.json").write_text(json.dumps(stm, indent=2, ensure_ascii=True) + "\n")
    logger.info("tokenizer: the run changed %s; the base's files rewritten with them", ", ".join(changes))
    return TokenizerFiles("run_compatible", sorted(files), changes, [t["content"] for t in new])


def _copy(src: Path, files: list[str], out_dir: Path) -> None:
    for f in files:
        shutil.copy2(src / f, out_dir / f)
