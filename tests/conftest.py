"""Shared fixtures: the tiny local model (built once per session) and a real vLLM server on it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from quantummind.paths import REPO_ROOT, SERVE_VENV, offline_env, venv_python
from quantummind.serving import start_background_server
from quantummind.tiny_model import build_tiny_model

os.environ.update(offline_env({}))
# HumanEval's canonical-time cache (evaluation.humaneval.timeouts): never the user's, empty at the start
os.environ["QM_CACHE_DIR"] = tempfile.mkdtemp(prefix="qm-test-cache-")


HEAVY_MARKS = ("slow", "serve")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`-n 2 --dist loadgroup`) every slow or serve test (training runs, vLLM servers, the
    demo) joins one group, so they run one after another on one worker and never compete for the cores or
    start a second copy of a session server; the quick tests spread over the other workers."""
    for item in items:
        if any(item.get_closest_marker(name) for name in HEAVY_MARKS):
            item.add_marker(pytest.mark.xdist_group("heavy"))


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

    Yields the quantummind.serving.BackgroundServer (base_url ends in /v1).
    """
    try:
        server = start_background_server(tiny_model_dir, "tiny", tmp_path_factory.mktemp("vllm"))
    except RuntimeError as exc:
        pytest.fail(f"vLLM did not start: {exc}")
    with server:
        yield server


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, serve_python) -> subprocess.CompletedProcess:
    """`make demo`, smaller (400 examples, 24 prompts), once per session: real axolotl, the merge, vLLM, the
    judge. The completed process, with `run_dir` added: its `merged/` is a fine-tuned tiny model that writes
    circuits the judge verifies, which the checkpoint-selection tests build on."""
    run = tmp_path_factory.mktemp("demo-run") / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "quantummind.demo", "--run-dir", str(run), "--num-examples", "400",
         "--num-tests", "24"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=1500,
    )
    proc.run_dir = run
    return proc


@pytest.fixture(scope="session")
def demo_model(demo_run) -> Path:
    """The demo's merged fine-tuned tiny model (fails the test when the demo did not finish)."""
    if demo_run.returncode != 0:
        pytest.fail(f"the demo failed ({demo_run.returncode}):\n{demo_run.stdout[-2000:]}\n{demo_run.stderr[-2000:]}")
    return demo_run.run_dir / "merged"
