"""Real axolotl training on the CPU with the tiny model (slow): plain accelerate launch, the
train.py wrapper (log, plot, verify), and 2-process CPU DDP."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from quantummind.merge.checkpoints import list_checkpoints
from quantummind.paths import REPO_ROOT, offline_env
from quantummind.training.training_log import best_checkpoint

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
    evals = list_checkpoints(out)
    assert [c.step for c in evals] == steps
    for c in evals:
        assert (c.path / "adapter_model.safetensors").is_file()
        assert c.eval_loss is not None and c.eval_loss > 0


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
    for key in SEED_FIELDS + ("best_eval_loss", "best_step", "best_checkpoint", "peak_gpu_memory_gib"):
        assert key in log, key
    for key in SEED_FIELDS:
        assert log[key] is not None, key
    assert log["version"] == "out" and log["epochs"] == 1 and log["lora_r"] == 16
    assert log["num_train_examples"] == len((tiny_data / "train.jsonl").read_text().splitlines())
    assert log["num_val_examples"] == len((tiny_data / "val.jsonl").read_text().splitlines())
    assert log["batch_size_effective"] == 4 and log["peak_gpu_memory_gib"] is None  # CPU: no GPU peak
    best = best_checkpoint(out)
    assert (log["best_step"], log["best_eval_loss"]) == (best.step, round(best.eval_loss, 4))
    assert best.eval_loss == min(c.eval_loss for c in list_checkpoints(out))
    warned = "WARNING: Training loss >= 0.5" in proc.stdout
    assert warned == (log["final_train_loss"] >= 0.5)
    png = (out / "loss_curve.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000

    ver = run([sys.executable, str(TRAIN_PY), "verify", str(cfg_path), "--max-new-tokens", "48"],
              cwd=cfg_path.parent)
    assert ver.returncode in (0, 1), ver.stdout[-2000:] + ver.stderr[-2000:]
    assert f"checkpoint: {best.path}" in ver.stdout
    assert "verification_pass=" in ver.stdout and ("PASS" in ver.stdout or "FAIL" in ver.stdout)


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
    if "avx512_bf16" not in Path("/proc/cpuinfo").read_text():
        return
    # Control: the same config through plain axolotl dies after the first eval on this CPU.
    plain = tiny_config("qlora-plain", adapter="qlora", load_in_4bit=True, lora_modules_to_save=None, **lean)
    proc = run([str(ACCELERATE), "launch", "-m", "axolotl.cli.train", str(plain)], cwd=plain.parent)
    assert proc.returncode != 0 and "a view of a leaf Variable" in proc.stdout + proc.stderr
