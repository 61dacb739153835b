"""Fixtures for the merge tests: tied tiny model and real axolotl runs, shared per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from merge_helpers import TrainedRun, axolotl_config, train
from quantummind.tiny_model import TinyModelSpec, build_tiny_model


@pytest.fixture(scope="session")
def tied_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-tied") / "tiny-qwen2-tied", seed=1,
                            spec=TinyModelSpec(tie_word_embeddings=True))


@pytest.fixture(scope="session")
def lora_run(tiny_model_dir, tmp_path_factory) -> TrainedRun:
    """One real axolotl LoRA run (untied tiny model), evaluated and saved every 3 steps."""
    work = tmp_path_factory.mktemp("lora-run")
    return train(axolotl_config(tiny_model_dir, work), work)


@pytest.fixture(scope="session")
def qlora_run(tiny_model_dir, tmp_path_factory) -> TrainedRun:
    work = tmp_path_factory.mktemp("qlora-run")
    return train(axolotl_config(tiny_model_dir, work, qlora=True, max_steps=6, lr=1e-2), work)


@pytest.fixture(scope="session")
def tokens_run(tied_model_dir, tmp_path_factory) -> TrainedRun:
    """Adds two tokens on the TIED tiny model: full embed/lm_head rows saved via modules_to_save."""
    work = tmp_path_factory.mktemp("tokens-run")
    cfg = axolotl_config(tied_model_dir, work, tokens=["<|qiskit|>", "<|ansatz|>"], max_steps=4, every=2)
    return train(cfg, work)


