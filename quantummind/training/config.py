"""Load an axolotl YAML the way axolotl sees it: relative paths resolve against the CWD."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

# Keys whose values are filesystem paths when they are local (base_model may be a hub id).
_PATH_KEYS = ("base_model", "base_model_config", "tokenizer_config", "output_dir",
              "dataset_prepared_path", "lora_model_dir", "deepspeed")
_DATASET_KEYS = ("datasets", "test_datasets")


class ConfigError(ValueError):
    """The config file cannot be read as an axolotl YAML mapping."""


def looks_local(value: str, base: Path) -> bool:
    """True when `value` names a local path rather than a hub id like `org/name`."""
    if value.startswith(("/", "./", "../", "~")):
        return True
    candidate = base / value
    if candidate.exists():
        return True
    first = Path(value).parts[0] if Path(value).parts else ""
    # `build/tiny-qwen2` before it is built: its first component is a local directory.
    return bool(first) and (base / first).is_dir()


def resolve_path(value: str, base: Path) -> str:
    return str((base / os.path.expanduser(value)).resolve())


def load_config(path: str | os.PathLike[str], base_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """YAML-load `path` and make its local paths absolute against `base_dir` (default: CWD)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a YAML mapping of axolotl keys, got {type(raw).__name__}")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    cfg = dict(raw)
    for key in _PATH_KEYS:
        value = cfg.get(key)
        always_local = key in ("output_dir", "dataset_prepared_path")
        if isinstance(value, str) and value and (always_local or looks_local(value, base)):
            cfg[key] = resolve_path(value, base)
    for key in _DATASET_KEYS:
        entries = cfg.get(key)
        if not isinstance(entries, list):
            continue
        resolved = []
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get("path"), str) and looks_local(entry["path"], base):
                entry = {**entry, "path": resolve_path(entry["path"], base)}
            resolved.append(entry)
        cfg[key] = resolved
    cfg["_config_path"] = str(path.resolve())
    return cfg


def output_dir(cfg: dict[str, Any]) -> Path:
    """The run's output_dir (axolotl's default when unset)."""
    return Path(str(cfg.get("output_dir") or "./outputs/out"))
