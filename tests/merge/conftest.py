"""Fixtures for the merge tests: tied tiny model and real axolotl runs, shared per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from merge_helpers import TrainedRun, axolotl_config, train
from quantummind.tiny_model import TinyModelSpec, build_tiny_model
from shared_builds import built_once


@pytest.fixture(scope="session")
def tied_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-tied") / "tiny-qwen2-tied", seed=1,
                            spec=TinyModelSpec(tie_word_embeddings=True))


def _trained_once(tmp_path_factory, name: str, cfg_of) -> TrainedRun:
    """A real axolotl run shared by the pytest-xdist workers (built_once); its config names the base it used."""
    d = built_once(tmp_path_factory, name, lambda work: train(cfg_of(work), work))
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    return TrainedRun(d / "config.yaml", Path(cfg["output_dir"]), Path(cfg["base_model"]))


@pytest.fixture(scope="session")
def lora_run(tiny_model_dir, tmp_path_factory) -> TrainedRun:
    """One real axolotl LoRA run (untied tiny model), evaluated and saved every 3 steps."""
    return _trained_once(tmp_path_factory, "lora-run", lambda work: axolotl_config(tiny_model_dir, work))


@pytest.fixture(scope="session")
def qlora_run(tiny_model_dir, tmp_path_factory) -> TrainedRun:
    return _trained_once(tmp_path_factory, "qlora-run",
                         lambda work: axolotl_config(tiny_model_dir, work, qlora=True, max_steps=6, lr=1e-2))


@pytest.fixture(scope="session")
def tokens_run(tied_model_dir, tmp_path_factory) -> TrainedRun:
    """Adds two tokens on the TIED tiny model: full embed/lm_head rows saved via modules_to_save."""
    return _trained_once(tmp_path_factory, "tokens-run", lambda work: axolotl_config(
        tied_model_dir, work, tokens=["<|qiskit|>", "<|ansatz|>"], max_steps=4, every=2))
