"""Fixtures for the training tests: a small verified dataset and tiny-config copies in tmp dirs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from quantummind.paths import REPO_ROOT
from quantummind.training.dataset import generate_dataset

TINY_CONFIG = REPO_ROOT / "configs" / "tiny-cpu.yaml"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 'simple'-style dataset (the tiny demo's), generated and verified for real."""
    out = tmp_path_factory.mktemp("tiny-data")
    generate_dataset(out, num_examples=48, seed=1, style="simple", val_fraction=0.15)
    return out


@pytest.fixture
def tiny_config(tmp_path, tiny_model_dir, tiny_data) -> Callable[..., Path]:
    """Write configs/tiny-cpu.yaml with its paths pointed at tmp dirs; `overrides` replace keys
    (None deletes one). Returns the new config's path."""

    def make(name: str = "tiny", **overrides: Any) -> Path:
        cfg = yaml.safe_load(TINY_CONFIG.read_text())
        cfg["base_model"] = str(tiny_model_dir)
        cfg["datasets"][0]["path"] = str(tiny_data / "train.jsonl")
        cfg["test_datasets"][0]["path"] = str(tiny_data / "val.jsonl")
        cfg["output_dir"] = str(tmp_path / name / "out")
        cfg["dataset_prepared_path"] = str(tmp_path / name / "prepared")
        for key, value in overrides.items():
            if value is None:
                cfg.pop(key, None)
            else:
                cfg[key] = value
        path = tmp_path / name / "config.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    return make


@pytest.fixture
def lean() -> dict[str, Any]:
    """Overrides for lean training runs: 12 optimizer steps, an eval and a checkpoint every 4."""
    return {"max_steps": 12, "eval_steps": 4, "save_steps": 4, "logging_steps": 2, "num_epochs": 1,
            "sequence_len": 384}
