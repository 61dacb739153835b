"""Real axolotl training on the CPU with the tiny model (slow): plain accelerate launch, the
train.py wrapper (log, plot, verify), and 2-process CPU DDP."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from quantummind.paths import REPO_ROOT, offline_env

from .trainer_state import best_step, checkpoint_dirs, eval_losses

TRAIN_PY = REPO_ROOT / "fine-tuning" / "train.py"
ACCELERATE = Path(sys.executable).parent / "accelerate"
SEED_FIELDS = ("version", "base_model", "training_data", "num_train_examples", "num_val_examples", "epochs",
               "final_train_loss", "training_time_hours", "gpu", "date", "lora_r", "lora_alpha",
               "learning_rate", "batch_size_effective")


def run(cmd: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = offline_env()
    full_env.update(env)
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=900)
    return proc


def assert_checkpoints_with_eval_loss(out: Path, steps: list[int]) -> None:
    """checkpoint-<step> for exactly `steps`, each with adapter weights and a finite, positive
    eval_loss logged at its own step (trainer_state.json read here, not by the merge's reader)."""
    dirs = checkpoint_dirs(out)
    assert sorted(dirs) == steps
    for step, path in dirs.items():
        assert (path / "adapter_model.safetensors").is_file()
        assert json.loads((path / "trainer_state.json").read_text())["global_step"] == step
    losses = eval_losses(out)
    assert sorted(losses) == steps
    assert all(math.isfinite(v) and v > 0 for v in losses.values()), losses


@pytest.mark.slow
def test_plain_accelerate_launch_trains_tiny_config(tiny_config, lean):
    cfg_path = tiny_config("plain", **lean)
    proc = run([str(ACCELERATE), "launch", "-m", "axolotl.cli.train", str(cfg_path)], cwd=cfg_path.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = Path(yaml.safe_load(cfg_path.read_text())["output_dir"])
    assert_checkpoints_with_eval_loss(out, [4, 8, 12])
    # The wrapper adds files; plain axolotl must not need them.
    assert not (out / "training_log.yaml").exists()


@pytest.mark.slow
def test_train_wrapper_writes_log_plot_and_verify_runs(tiny_config, tiny_data, lean):
    cfg_path = tiny_config("wrapped", **lean)
    proc = run([sys.executable, str(TRAIN_PY), "train", str(cfg_path)], cwd=cfg_path.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "axolotl.cli.train" in proc.stdout and "Training completed" in proc.stdout + proc.stderr
    out = Path(yaml.safe_load(cfg_path.read_text())["output_dir"])
    log = yaml.safe_load((out / "training_log.yaml").read_text())
    cfg = yaml.safe_load(cfg_path.read_text())
    assert list(log)[:len(SEED_FIELDS)] == list(SEED_FIELDS)  # the seed's fields, in its order
    assert log["version"] == "out" and log["epochs"] == 1 and log["lora_r"] == 16
    assert (log["base_model"], log["training_data"]) == (cfg["base_model"], cfg["datasets"][0]["path"])
    assert (log["lora_alpha"], log["learning_rate"]) == (cfg["lora_alpha"], cfg["learning_rate"])
    assert log["gpu"] == f"none (CPU, {os.cpu_count()} cores)"  # this machine has no GPU
    assert 0 < log["training_time_hours"] < 0.25  # a lean tiny run: minutes, not hours
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", log["date"]), log["date"]
    assert math.isfinite(log["final_train_loss"]) and log["final_train_loss"] > 0
    assert log["num_train_examples"] == len((tiny_data / "train.jsonl").read_text().splitlines())
    assert log["num_val_examples"] == len((tiny_data / "val.jsonl").read_text().splitlines())
    assert log["batch_size_effective"] == 4 and log["peak_gpu_memory_gib"] is None  # CPU: no GPU peak
    step, loss = best_step(out)
    assert (log["best_step"], log["best_eval_loss"]) == (step, round(loss, 4))
    assert log["best_checkpoint"] == str(out / f"checkpoint-{step}")
    warned = "WARNING: Training loss >= 0.5" in proc.stdout
    assert warned == (log["final_train_loss"] >= 0.5)
    png = (out / "loss_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    # Two greedy tokens cannot be a verified 4-qubit circuit: verify must say FAIL and exit 1.
    ver = run([sys.executable, str(TRAIN_PY), "verify", str(cfg_path), "--max-new-tokens", "2",
               "--temperature", "0"], cwd=cfg_path.parent)
    assert ver.returncode == 1, ver.stdout[-2000:] + ver.stderr[-2000:]
    assert f"checkpoint: {out / f'checkpoint-{step}'} (eval_loss {loss:.4f})" in ver.stdout
    assert "FAIL: the reply is not a verified circuit" in ver.stdout and "verification_pass=False" in ver.stdout


def test_train_wrapper_stops_on_lint_error(tiny_config):
    cfg_path = tiny_config("bad", special_tokens={"unk_token": "<unk>"})
    proc = run([sys.executable, str(TRAIN_PY), "train", str(cfg_path)], cwd=cfg_path.parent)
    assert proc.returncode == 1 and "unk_token" in proc.stdout
    assert "accelerate" not in proc.stdout  # nothing was launched
    assert not Path(yaml.safe_load(cfg_path.read_text())["output_dir"]).exists()


@pytest.mark.slow
def test_two_process_cpu_ddp_trains_tiny_config(tiny_config, tiny_data, lean):
    cfg_path = tiny_config("ddp", max_memory={"cpu": "16GiB"}, **lean)
    proc = run([str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "-m", "axolotl.cli.train",
                str(cfg_path)], cwd=cfg_path.parent, ACCELERATE_USE_CPU="true")
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    out = Path(yaml.safe_load(cfg_path.read_text())["output_dir"])
    text += (out / "debug.log").read_text()
    assert '"world_size": 2' in text
    # axolotl sizes an epoch by the global batch: with 2 ranks, half the single-process steps.
    n_train = len((tiny_data / "train.jsonl").read_text().splitlines())
    steps = re.findall(r"Maximum number of steps set at (\d+)", text)
    assert steps and int(steps[-1]) == math.ceil(n_train / (4 * 2)), (steps, n_train)
    assert_checkpoints_with_eval_loss(out, [4, 8, 12])


def test_train_command_is_exactly_accelerate_launch_axolotl():
    from quantummind.training.wrapper import AXOLOTL_MODULE, CPU_QLORA_MODULE, build_train_command

    cmd = build_train_command("c.yaml", ["--learning_rate", "1e-4"], cfg={"adapter": "lora"}, on_gpu=False)
    assert Path(cmd[0]).name == "accelerate"
    assert cmd[1:] == ["launch", "-m", AXOLOTL_MODULE, "c.yaml", "--learning_rate", "1e-4"]
    qlora_cpu = build_train_command("c.yaml", [], cfg={"adapter": "qlora"}, on_gpu=False)
    assert qlora_cpu[-2:] == [CPU_QLORA_MODULE, "c.yaml"]
    qlora_gpu = build_train_command("c.yaml", [], cfg={"adapter": "qlora"}, on_gpu=True, num_processes=4)
    assert qlora_gpu[2:] == ["--multi_gpu", "--num_processes", "4", "-m", AXOLOTL_MODULE, "c.yaml"]


@pytest.mark.slow
def test_train_wrapper_runs_qlora_with_eval_on_cpu(tiny_config, lean):
    """QLoRA + evaluation on the CPU: the wrapper's launcher applies the bitsandbytes AVX512-BF16
    workaround, so training continues past the first eval and leaves scored checkpoints."""
    cfg_path = tiny_config("qlora", adapter="qlora", load_in_4bit=True, lora_modules_to_save=None, **lean)
    proc = run([sys.executable, str(TRAIN_PY), "train", str(cfg_path)], cwd=cfg_path.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "quantummind.training.cpu_qlora_launch" in proc.stdout
    out = Path(yaml.safe_load(cfg_path.read_text())["output_dir"])
    assert_checkpoints_with_eval_loss(out, [4, 8, 12])


def _cpu_has_avx512_bf16() -> bool:
    return "avx512_bf16" in Path("/proc/cpuinfo").read_text()


def test_cpu_qlora_launcher_disables_the_repack_that_breaks_training(monkeypatch):
    """The part of the workaround a CPU without AVX512-BF16 can check: bitsandbytes' Linear4bit
    decides on the inference repack through bitsandbytes.nn.modules.has_avx512bf16 (a CPU with
    the feature is played by patching that name to True), and apply_workaround turns it off."""
    pytest.importorskip("bitsandbytes")
    import bitsandbytes.nn.modules as bnb_modules
    from bitsandbytes.nn import Linear4bit

    from quantummind.training.cpu_qlora_launch import apply_workaround

    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: True)
    assert Linear4bit(64, 64).support_avx512bf16_for_cpu is True  # bitsandbytes consults this name
    apply_workaround()
    assert Linear4bit(64, 64).support_avx512bf16_for_cpu is False


@pytest.mark.slow
def test_plain_axolotl_qlora_with_eval_dies_on_avx512bf16(tiny_config, lean):
    """Control for the workaround: without it, the same config dies after the first eval."""
    if not _cpu_has_avx512_bf16():
        pytest.skip("this CPU has no AVX512-BF16 (/proc/cpuinfo): bitsandbytes never repacks here, "
                    "so plain axolotl trains QLoRA with eval and the failure cannot be shown")
    plain = tiny_config("qlora-plain", adapter="qlora", load_in_4bit=True, lora_modules_to_save=None, **lean)
    proc = run([str(ACCELERATE), "launch", "-m", "axolotl.cli.train", str(plain)], cwd=plain.parent)
    assert proc.returncode != 0 and "a view of a leaf Variable" in proc.stdout + proc.stderr
