"""Shared fixtures: the tiny local model (built once per session) and a real vLLM server on it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from quantummind.paths import REPO_ROOT, SERVE_VENV, offline_env, venv_python
from quantummind.serving import free_port
from quantummind.tiny_model import build_tiny_model

os.environ.update(offline_env({}))
SERVE_SCRIPT = REPO_ROOT / "serve_vllm.sh"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Random-init Qwen2 + byte-level BPE tokenizer (untied embeddings), built offline."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny-qwen2", seed=0)


@pytest.fixture(scope="session")
def serve_python() -> Path:
    py = venv_python(SERVE_VENV)
    if not py.exists():
        pytest.fail(f"{py} missing: run `make setup` (make test does it) to create .venv-serve")
    return py


@pytest.fixture(scope="session")
def vllm_server(tiny_model_dir, serve_python, tmp_path_factory):
    """A real vLLM (CPU build) OpenAI server on 127.0.0.1 serving the tiny model as 'tiny',
    started the way users start it: `serve_vllm.sh --background`, ended with `serve_vllm.sh stop`.

    Yields a dict: base_url (ending in /v1), model (served name), model_dir, pid, log.
    """
    yield from serve_in_background(tiny_model_dir, "tiny", tmp_path_factory.mktemp("vllm"))


def serve_in_background(model_dir: Path, name: str, run_dir: Path, *extra: str):
    """Start serve_vllm.sh --background on a free port; stop it (and check it is gone) afterwards."""
    port = free_port()
    env = offline_env()
    env.update({"RUN_DIR": str(run_dir), "SERVED_NAME": name, "SERVE_TIMEOUT": "300"})
    cmd = [str(SERVE_SCRIPT), "--background", str(model_dir), str(port), "4", "1024", *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    log = run_dir / f"vllm-{port}.log"
    if proc.returncode != 0:
        tail = log.read_text()[-3000:] if log.exists() else ""
        pytest.fail(f"serve_vllm.sh failed ({proc.returncode}): {proc.stderr[-2000:]}\n--- log ---\n{tail}")
    pid = int((run_dir / f"vllm-{port}.pid").read_text())
    try:
        yield {"base_url": f"http://127.0.0.1:{port}/v1", "model": name, "model_dir": model_dir,
               "pid": pid, "port": port, "log": log}
    finally:
        subprocess.run([str(SERVE_SCRIPT), "stop", str(port)], env=env, capture_output=True, timeout=60)
