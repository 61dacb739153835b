"""Shared fixtures: the tiny local model (built once per session) and a real vLLM server on it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared_builds import built_once
from quantummind.paths import REPO_ROOT, SERVE_VENV, offline_env, venv_python
from quantummind.serving import start_background_server
from quantummind.tiny_model import build_tiny_model

os.environ.update(offline_env({}))
# HumanEval's canonical-time cache (evaluation.humaneval.timeouts): never the user's, empty at the start
os.environ["QM_CACHE_DIR"] = tempfile.mkdtemp(prefix="qm-test-cache-")


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


@dataclass(frozen=True)
class DemoRun:
    run_dir: Path
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, serve_python) -> DemoRun:
    """`make demo`, smaller (400 examples, 24 prompts), once per test run (built_once): real axolotl, the merge,
    vLLM, the judge. Its `merged/` is a fine-tuned tiny model that writes circuits the judge verifies, which
    the checkpoint-selection tests build on."""
    def build(d: Path) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "quantummind.demo", "--run-dir", str(d / "demo"), "--num-examples", "400",
             "--num-tests", "24"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=1500,
        )
        for name, text in (("returncode", str(proc.returncode)), ("stdout", proc.stdout), ("stderr", proc.stderr)):
            (d / f"{name}.txt").write_text(text)

    d = built_once(tmp_path_factory, "demo", build)
    return DemoRun(d / "demo", int((d / "returncode.txt").read_text()), (d / "stdout.txt").read_text(),
                   (d / "stderr.txt").read_text())


@pytest.fixture(scope="session")
def demo_model(demo_run) -> Path:
    """The demo's merged fine-tuned tiny model (fails the test when the demo did not finish)."""
    if demo_run.returncode != 0:
        pytest.fail(f"the demo failed ({demo_run.returncode}):\n{demo_run.stdout[-2000:]}\n{demo_run.stderr[-2000:]}")
    return demo_run.run_dir / "merged"
