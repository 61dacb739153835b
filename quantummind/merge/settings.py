"""The parts of an axolotl YAML the merge needs, read with plain pyyaml (no axolotl import)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from quantummind.merge.errors import MergeError
from quantummind.training.config import ConfigError, load_config

HF_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def _load_yaml(path: Path) -> dict:
    """The training side's loader (issue 4): one notion of path resolution."""
    if not path.is_file():
        raise MergeError(f"config {path} not found")
    try:
        return load_config(path)
    except ConfigError as exc:  # already a one-line message
        raise MergeError(str(exc)) from None


def _truthy(v) -> bool:
    return v is True or (isinstance(v, str) and v.lower() in ("true", "auto"))


@dataclass
class MergeSettings:
    base_model: str
    output_dir: Path
    adapter: str
    load_in_4bit: bool
    quant_type: str = "nf4"
    blocksize: int = 64
    double_quant: bool = True
    train_dtype: torch.dtype = torch.float32  # dtype the base was loaded in for training
    compute_dtype: torch.dtype = torch.float32  # dtype the 4-bit base was dequantized to
    skip_modules: list[str] = field(default_factory=list)
    # local dataset files and dataset_prepared_path: inputs a merge output must never replace
    data_paths: list[Path] = field(default_factory=list)

    @property
    def run_name(self) -> str:
        return self.output_dir.name

    @property
    def is_qlora(self) -> bool:
        return self.adapter == "qlora" or bool(self.load_in_4bit)


def compute_dtype(value, default: torch.dtype, *, source: str = "bnb_4bit_compute_dtype") -> torch.dtype:
    """The dtype bitsandbytes dequantized the 4-bit base to: `value` as BitsAndBytesConfig takes it
    (a torch dtype or its name, "torch." prefix allowed), `default` (the training dtype, axolotl's
    default) when unset. Anything else is an error: a silent fallback would round the merge in a
    dtype training never used."""
    if value is None:
        return default
    if isinstance(value, torch.dtype):
        if value in HF_DTYPES.values():
            return value
    else:
        name = str(value).removeprefix("torch.")
        if name in HF_DTYPES:
            return HF_DTYPES[name]
    raise MergeError(f"{source} {value!r} is not supported: choose one of {', '.join(HF_DTYPES)}")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def load_settings(config_path: str | Path) -> MergeSettings:
    """Relative paths resolve against the CWD, as axolotl resolves them."""
    path = Path(config_path)
    cfg = _load_yaml(path)
    for key in ("base_model", "output_dir"):
        if not cfg.get(key):
            raise MergeError(f"config {path} has no {key}")
    adapter = cfg.get("adapter")
    if adapter not in ("lora", "qlora"):
        raise MergeError(f"config {path}: adapter is {adapter!r}; only lora/qlora runs have an adapter to merge")
    if _truthy(cfg.get("bf16")) or cfg.get("bfloat16"):
        train_dtype = torch.bfloat16
    elif _truthy(cfg.get("fp16")) or cfg.get("float16"):
        train_dtype = torch.float16
    else:
        train_dtype = torch.float32
    bnb = cfg.get("bnb_config_kwargs") or {}
    base = str(cfg["base_model"])
    if base.startswith((".", "/", "~")) or os.path.isdir(base):
        base = str(Path(base).expanduser().resolve())
    return MergeSettings(
        base_model=base,
        output_dir=Path(cfg["output_dir"]).expanduser().resolve(),
        adapter=adapter,
        load_in_4bit=bool(cfg.get("load_in_4bit")),
        quant_type=str(bnb.get("bnb_4bit_quant_type", cfg.get("bnb_4bit_quant_type", "nf4"))),
        blocksize=int(bnb.get("blocksize", 64) or 64),
        double_quant=bool(bnb.get("bnb_4bit_use_double_quant", cfg.get("bnb_4bit_use_double_quant", True))),
        train_dtype=train_dtype,
        # axolotl reads bnb_config_kwargs only for 4-bit runs; a LoRA run never used it
        compute_dtype=(compute_dtype(bnb.get("bnb_4bit_compute_dtype"), train_dtype,
                                     source=f"config {path}: bnb_config_kwargs.bnb_4bit_compute_dtype")
                       if adapter == "qlora" or cfg.get("load_in_4bit") else train_dtype),
        skip_modules=list(bnb.get("llm_int8_skip_modules") or []),
        data_paths=_data_paths(cfg),
    )


def _data_paths(cfg: dict) -> list[Path]:
    """The config's local dataset paths (load_config made them absolute) and dataset_prepared_path."""
    paths = [str(e["path"]) for key in ("datasets", "test_datasets") for e in (cfg.get(key) or [])
             if isinstance(e, dict) and isinstance(e.get("path"), str) and Path(e["path"]).is_absolute()]
    if isinstance(cfg.get("dataset_prepared_path"), str):
        paths.append(cfg["dataset_prepared_path"])
    return [Path(p) for p in paths]


def resolve_base_model(name: str) -> Path:
    """A local directory, or a hub id found in the local HF cache (never downloaded)."""
    p = Path(name)
    if p.is_dir():
        return p
    if name.startswith((".", "/", "~")):
        raise MergeError(f"base_model {name} does not exist")
    if os.environ.get("HF_HUB_CACHE"):
        cache = Path(os.environ["HF_HUB_CACHE"])
    else:
        cache = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    repo = cache / ("models--" + name.replace("/", "--"))
    ref = repo / "refs" / "main"
    snapshots = repo / "snapshots"
    if ref.is_file():
        snapshot = snapshots / ref.read_text().strip()
        if snapshot.is_dir():
            return snapshot
    if snapshots.is_dir():
        found = sorted(snapshots.iterdir(), key=lambda d: d.stat().st_mtime)
        if found:
            return found[-1]
    raise MergeError(f"base_model {name!r} is not a directory and not in the HF cache ({cache}); "
                     "download it first (huggingface-cli download) or point base_model at a local copy")
