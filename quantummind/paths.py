"""Where the project keeps things, so scripts, tests and the Makefile agree."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAIN_VENV = REPO_ROOT / ".venv"
SERVE_VENV = REPO_ROOT / ".venv-serve"
BUILD_DIR = REPO_ROOT / "build"
TINY_MODEL_DIR = BUILD_DIR / "tiny-qwen2"

# Every run here is offline: nothing may be fetched from a model hub.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "AXOLOTL_DO_NOT_TRACK": "1",
    "WANDB_MODE": "disabled",
    "DO_NOT_TRACK": "1",
}


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def offline_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.update(OFFLINE_ENV)
    return env


def running_in(venv: Path) -> bool:
    return Path(sys.prefix).resolve() == venv.resolve()
