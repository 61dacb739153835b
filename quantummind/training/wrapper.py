"""`train.py train`: lint, then exactly `accelerate launch -m axolotl.cli.train CONFIG ...`,
streaming axolotl's output, then the training log and the loss curve."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from quantummind.training import training_log as tlog
from quantummind.training.config import output_dir
from quantummind.training.lint import ERROR, Finding, LintReport, format_report, lint_config
from quantummind.training.memory import GpuInfo, visible_gpu

logger = logging.getLogger(__name__)

AXOLOTL_MODULE = "axolotl.cli.train"
CPU_QLORA_MODULE = "quantummind.training.cpu_qlora_launch"


def accelerate_launch() -> list[str]:
    """`accelerate launch` from this interpreter's environment (never another one on PATH)."""
    exe = Path(sys.executable).parent / "accelerate"
    if exe.exists():
        return [str(exe), "launch"]
    return [sys.executable, "-m", "accelerate.commands.launch"]


def build_train_command(config: str, extra: list[str], *, cfg: dict[str, Any], on_gpu: bool,
                        num_processes: int = 1) -> list[str]:
    """On a CPU with a QLoRA config, the launcher module applies the bitsandbytes workaround
    before running axolotl.cli.train; otherwise the module is axolotl.cli.train itself."""
    module = CPU_QLORA_MODULE if (not on_gpu and cfg.get("adapter") == "qlora") else AXOLOTL_MODULE
    cmd = accelerate_launch()
    if num_processes > 1:
        cmd += ["--multi_gpu", "--num_processes", str(num_processes)]
    return cmd + ["-m", module, config, *extra]


@dataclass
class TrainResult:
    returncode: int
    wall_seconds: float
    log: dict[str, Any] | None
    log_path: Path | None
    plot_path: Path | None
    lint: LintReport
    reward_plot_path: Path | None = None  # GRPO runs: reward_curve.png


def gpu_name(gpu: GpuInfo | None) -> str:
    return gpu.name if gpu else f"none (CPU, {os.cpu_count()} cores)"


def stream(cmd: list[str], env: dict[str, str], out: TextIO, tail_lines: int = 400) -> tuple[int, str]:
    """Run `cmd`, copying its merged output to `out` line by line; return (status, output tail)."""
    tail: deque[str] = deque(maxlen=tail_lines)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            text=True, bufsize=1, errors="replace")
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            out.write(line)
            out.flush()
            tail.append(line)
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise
    return proc.wait(), "".join(tail)


def train(config: str, cfg: dict[str, Any], extra: list[str], *, num_processes: int = 1, device: str = "auto",
          out: TextIO = sys.stdout) -> TrainResult:
    """Lint with the device decision `lint` makes (resolve_device), print the report, and launch only
    when it has no errors; a GPU config cannot be launched on a host without a GPU."""
    gpu = visible_gpu()
    on_gpu = gpu is not None
    report = lint_config(cfg, gpu=gpu, device=device)
    if report.device == "gpu" and not on_gpu:
        report.findings.append(Finding(ERROR, "device", "no GPU visible and this is a GPU config: train it on a "
                                       "GPU host, or make it a CPU config (configs/tiny-cpu.yaml) and pass "
                                       "--device cpu."))
    out.write(format_report(report, config) + "\n")
    out.flush()
    if report.errors:
        return TrainResult(1, 0.0, None, None, None, report)
    cmd = build_train_command(config, extra, cfg=cfg, on_gpu=on_gpu, num_processes=num_processes)
    # The caller's environment decides about the hub (HF_HUB_OFFLINE etc.); telemetry stays off.
    env = dict(os.environ)
    env.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    if num_processes > 1 and not on_gpu:
        env["ACCELERATE_USE_CPU"] = "true"
    out.write("+ " + " ".join(cmd) + "\n")
    out.flush()
    start = time.monotonic()
    code, tail = stream(cmd, env, out)
    wall = time.monotonic() - start
    out_dir = output_dir(cfg)
    if code != 0 or not out_dir.is_dir():
        return TrainResult(code or 1, wall, None, None, None, report)
    history, best = tlog.log_history(out_dir), tlog.best_checkpoint(out_dir)
    log = tlog.build_training_log(cfg, out_dir, wall_seconds=wall, gpu=gpu_name(gpu),
                                  world_size=num_processes, on_gpu=on_gpu,
                                  streamed_train_loss=tlog.train_loss_from_output(tail),
                                  history=history, best=best)
    log_path = tlog.write_training_log(log, out_dir)
    plot_path = tlog.plot_loss_curve(out_dir, history=history, best=best)
    reward_plot = tlog.plot_reward_curve(out_dir, history) if tlog.is_grpo(cfg) else None
    return TrainResult(0, wall, log, log_path, plot_path, report, reward_plot)
