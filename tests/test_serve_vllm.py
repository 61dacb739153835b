"""serve_vllm.sh: command construction, input validation, and real vLLM servers on the tiny model."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from quantummind.paths import REPO_ROOT, SERVE_VENV
from quantummind.serving import free_port, wait_for_health

SCRIPT = REPO_ROOT / "serve_vllm.sh"


def script_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without the script's settings a developer may have exported, plus `env`."""
    full_env = {k: v for k, v in os.environ.items() if k not in {"HOST", "VLLM_API_KEY", "SERVED_NAME", "LORA_MODULES"}}
    full_env.update(env or {})
    return full_env


def serve(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], env=script_env(env), capture_output=True, text=True, timeout=timeout)


def dry_run(*args: str, env: dict[str, str] | None = None) -> list[str]:
    proc = serve("--dry-run", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, "the dry run prints the command on one line"
    return shlex.split(lines[0])


def flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_dry_run_cpu_defaults(tiny_model_dir):
    argv = dry_run(str(tiny_model_dir), env={"QM_DEVICE": "cpu"})
    assert argv[0] == "env"
    assert {"HF_HUB_OFFLINE=1", "VLLM_CPU_KVCACHE_SPACE=1", "OMP_NUM_THREADS=1"} <= set(argv)
    i = argv.index("-m")
    assert argv[i - 1] == str(SERVE_VENV / "bin" / "python")
    assert argv[i + 1] == "vllm.entrypoints.openai.api_server"
    assert flag(argv, "--model") == str(tiny_model_dir)
    assert flag(argv, "--port") == "8000" and flag(argv, "--host") == "127.0.0.1"
    assert flag(argv, "--max-num-seqs") == "9"
    assert flag(argv, "--served-model-name") == tiny_model_dir.name
    assert flag(argv, "--dtype") == "float32" and "--enforce-eager" in argv
    assert "--max-model-len" not in argv, "MAX_LEN omitted: vLLM takes it from the model"
    assert "--gpu-memory-utilization" not in argv


def test_dry_run_cuda_positionals_and_parallelism(tiny_model_dir):
    argv = dry_run(str(tiny_model_dir), "8100", "16", "4096", "0.85", "--", "--enable-prefix-caching",
                   env={"QM_DEVICE": "cuda", "TENSOR_PARALLEL": "2", "DATA_PARALLEL": "2", "SERVED_NAME": "qm"})
    assert argv[argv.index("serve") - 1] == str(SERVE_VENV / "bin" / "vllm")
    assert argv[argv.index("serve") + 1] == str(tiny_model_dir)
    assert flag(argv, "--port") == "8100" and flag(argv, "--max-num-seqs") == "16"
    assert flag(argv, "--max-model-len") == "4096" and flag(argv, "--gpu-memory-utilization") == "0.85"
    assert flag(argv, "--tensor-parallel-size") == "2" and flag(argv, "--data-parallel-size") == "2"
    assert flag(argv, "--served-model-name") == "qm"
    assert argv[-1] == "--enable-prefix-caching"
    assert "--dtype" not in argv and "--enforce-eager" not in argv


def test_dash_keeps_a_default(tiny_model_dir):
    argv = dry_run(str(tiny_model_dir), "-", "-", "2048", env={"QM_DEVICE": "cpu"})
    assert flag(argv, "--port") == "8000" and flag(argv, "--max-num-seqs") == "9"
    assert flag(argv, "--max-model-len") == "2048"


def test_exposed_host_requires_an_api_key_and_keeps_it_off_the_command_line(tiny_model_dir):
    refused = serve("--dry-run", str(tiny_model_dir), env={"HOST": "0.0.0.0"})
    assert refused.returncode != 0 and "VLLM_API_KEY" in refused.stderr
    argv = dry_run(str(tiny_model_dir), env={"HOST": "0.0.0.0", "VLLM_API_KEY": "s3cret"})
    assert flag(argv, "--host") == "0.0.0.0"
    assert "s3cret" not in " ".join(argv), "vLLM reads VLLM_API_KEY from the environment"


def _adapter(path: Path, modules_to_save, r: int = 32) -> Path:
    path.mkdir(parents=True)
    cfg = {"peft_type": "LORA", "r": r, "lora_alpha": 64, "target_modules": ["q_proj"],
           "modules_to_save": modules_to_save}
    (path / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    (path / "adapter_model.safetensors").write_bytes(b"")
    return path


def test_lora_modules_are_passed_with_their_rank(tiny_model_dir, tmp_path):
    a = _adapter(tmp_path / "a", None)
    argv = dry_run(str(tiny_model_dir), env={"QM_DEVICE": "cpu", "LORA_MODULES": f"qm={a}"})
    assert "--enable-lora" in argv and flag(argv, "--lora-modules") == f"qm={a}"
    assert flag(argv, "--max-lora-rank") == "32"
    assert flag(argv, "--max-loras") == "1"


def test_lora_rank_is_rounded_up_to_one_vllm_takes_and_every_adapter_fits_a_batch(tiny_model_dir, tmp_path):
    # vLLM's --max-lora-rank takes 1, 8, 16, 32, 64, ...: r=4 and r=12 adapters need 16, not 12
    a, b = _adapter(tmp_path / "a", None, r=4), _adapter(tmp_path / "b", None, r=12)
    argv = dry_run(str(tiny_model_dir), env={"QM_DEVICE": "cpu", "LORA_MODULES": f"a={a} b={b}"})
    assert flag(argv, "--max-lora-rank") == "16"
    assert flag(argv, "--max-loras") == "2"
    huge = _adapter(tmp_path / "c", None, r=1024)
    proc = serve("--dry-run", str(tiny_model_dir), env={"QM_DEVICE": "cpu", "LORA_MODULES": f"c={huge}"})
    assert proc.returncode == 2 and "512" in proc.stderr


def test_lora_with_modules_to_save_is_refused(tiny_model_dir, tmp_path):
    a = _adapter(tmp_path / "a", ["embed_tokens", "lm_head"])
    proc = serve("--dry-run", str(tiny_model_dir), env={"LORA_MODULES": f"qm={a}"})
    assert proc.returncode != 0
    assert "modules_to_save" in proc.stderr and "merge_adapter.py" in proc.stderr


def _listening_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


@pytest.mark.parametrize("case", [
    "missing-model", "no-config", "no-safetensors", "port-text", "port-zero", "port-high", "port-busy",
    "seqs-zero", "seqs-text", "len-negative", "util-zero", "util-high", "util-text", "tp-text", "too-many",
    "lora-format", "lora-missing",
])
def test_bad_input_is_one_clear_line(case, tiny_model_dir, tmp_path):
    m = str(tiny_model_dir)
    env: dict[str, str] = {}
    listener = None
    if case == "missing-model":
        args = [str(tmp_path / "nope")]
    elif case == "no-config":
        (tmp_path / "m").mkdir()
        (tmp_path / "m" / "model.safetensors").write_bytes(b"")
        args = [str(tmp_path / "m")]
    elif case == "no-safetensors":
        (tmp_path / "m").mkdir()
        (tmp_path / "m" / "config.json").write_text("{}")
        args = [str(tmp_path / "m")]
    elif case == "port-busy":
        listener = _listening_port()
        args = [m, str(listener.getsockname()[1])]
    else:
        args = {
            "port-text": [m, "http"], "port-zero": [m, "0"], "port-high": [m, "65536"],
            "seqs-zero": [m, "8000", "0"], "seqs-text": [m, "8000", "many"],
            "len-negative": [m, "8000", "9", "-5"], "util-zero": [m, "8000", "9", "512", "0"],
            "util-high": [m, "8000", "9", "512", "1.01"], "util-text": [m, "8000", "9", "512", "most"],
            "tp-text": [m], "too-many": [m, "8000", "9", "512", "0.9", "extra"],
            "lora-format": [m], "lora-missing": [m],
        }[case]
        env = {"tp-text": {"TENSOR_PARALLEL": "two"}, "lora-format": {"LORA_MODULES": "just-a-path"},
               "lora-missing": {"LORA_MODULES": f"x={tmp_path / 'none'}"}}.get(case, {})
    try:
        proc = serve(*args, env=env)
    finally:
        if listener:
            listener.close()
    assert proc.returncode == 2, (case, proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("serve_vllm.sh: error: "), proc.stderr
    assert BAD_INPUT_SAYS[case] in lines[-1], (case, lines[-1])  # the validation meant for this input fired
    assert proc.stdout == ""


BAD_INPUT_SAYS = {
    "missing-model": "does not exist", "no-config": "has no config.json", "no-safetensors": "has no *.safetensors",
    "port-text": "PORT must be a number in 1..65535, not 'http'", "port-zero": "PORT must be a number in 1..65535, not '0'",
    "port-high": "not '65536'", "port-busy": "is already in use", "seqs-zero": "MAX_SEQS must be a positive integer, not '0'",
    "seqs-text": "MAX_SEQS must be a positive integer, not 'many'", "len-negative": "MAX_LEN must be a positive integer",
    "util-zero": "GPU_UTIL must be a number in (0, 1], not '0'", "util-high": "not '1.01'", "util-text": "not 'most'",
    "tp-text": "TENSOR_PARALLEL must be a positive integer, not 'two'", "too-many": "too many arguments (extra)",
    "lora-format": "LORA_MODULES entries are name=path, not 'just-a-path'", "lora-missing": "has no adapter_config.json",
}


def test_stop_without_servers_is_harmless(tmp_path):
    proc = serve("stop", env={"RUN_DIR": str(tmp_path)})
    assert proc.returncode == 0 and "no background servers" in proc.stderr
    proc = serve("stop", "8555", env={"RUN_DIR": str(tmp_path)})
    assert proc.returncode == 2 and "no background server recorded" in proc.stderr


# A process group shaped like vLLM's: a leader that exits on TERM and a forked child that ignores
# it (as an engine process stuck in a step would), with the leader left unreaped by its parent.
_STUBBORN_GROUP = """
import os, signal, sys, time
if os.fork() == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(600)
    os._exit(0)
print("ready", flush=True)
time.sleep(600)
"""


def test_stop_waits_for_the_whole_group_and_ignores_zombies(tmp_path):
    group = subprocess.Popen([sys.executable, "-c", _STUBBORN_GROUP], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        assert group.stdout.readline().strip() == "ready"
        (tmp_path / "vllm-8555.pid").write_text(f"{group.pid}\n")
        stopped = serve("stop", "8555", env={"RUN_DIR": str(tmp_path)}, timeout=90)
        assert stopped.returncode == 0, stopped.stderr
        # The leader is a zombie until we reap it below; the child needed SIGKILL.
        assert psutil.Process(group.pid).status() == psutil.STATUS_ZOMBIE
        assert not _running(pgid=group.pid), "stop returned while the group still ran"
        assert not (tmp_path / "vllm-8555.pid").exists()
    finally:
        for pid in _running(pgid=group.pid):
            os.kill(pid, signal.SIGKILL)
        group.wait(timeout=30)


# ---------------------------------------------------------------------------------------------
# real servers


def _running(pids: list[int] | None = None, pgid: int | None = None) -> list[int]:
    """Processes (of `pids`, or of process group `pgid`) that still run. A zombie is not running:
    it holds no memory or port, and when it is reaped depends on the host's init, not on us."""
    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if (pids is not None and proc.pid in pids) or (pgid is not None and os.getpgid(proc.pid) == pgid):
                found.append(proc.pid)
        except (psutil.NoSuchProcess, ProcessLookupError):
            continue
    return found


def _chat(base_url: str, model: str) -> str:
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)
    assert [m.id for m in client.models.list()] == [model]
    r = client.chat.completions.create(
        model=model, max_tokens=8, temperature=0.7,
        messages=[{"role": "user", "content": "Create a 4-qubit variational circuit for the XY chain Hamiltonian ground state."}],
    )
    assert r.choices[0].finish_reason in {"length", "stop"}
    return r.choices[0].message.content


@pytest.mark.slow
def test_background_server_answers_and_stop_leaves_nothing_running(tiny_model_dir, serve_python, tmp_path):
    port = free_port()
    env = {"RUN_DIR": str(tmp_path), "SERVED_NAME": "qm-tiny", "SERVE_TIMEOUT": "300"}
    started = serve("--background", str(tiny_model_dir), str(port), "4", "512", env=env, timeout=400)
    assert started.returncode == 0, started.stderr + (tmp_path / f"vllm-{port}.log").read_text()[-3000:]
    assert f"http://127.0.0.1:{port}/v1" in started.stdout and "qm-tiny" in started.stdout
    assert "curl" in started.stdout
    # the stop hint works as printed: it names this RUN_DIR (issue 23)
    assert f"stop it with: RUN_DIR={tmp_path} ./serve_vllm.sh stop {port}" in started.stderr, started.stderr
    pid = int((tmp_path / f"vllm-{port}.pid").read_text())
    try:
        assert isinstance(_chat(f"http://127.0.0.1:{port}/v1", "qm-tiny"), str)
        busy = serve("--dry-run", str(tiny_model_dir), str(port))
        assert busy.returncode == 2 and "in use" in busy.stderr
    finally:
        stopped = serve("stop", str(port), env=env)
    assert stopped.returncode == 0
    # `stop` returns only once the group is gone, so no waiting here.
    assert not _running(pgid=pid), "every process of the server's group must be gone"
    assert not (tmp_path / f"vllm-{port}.pid").exists()


@pytest.mark.slow
def test_foreground_server_stops_everything_on_ctrl_c(tiny_model_dir, serve_python, tmp_path):
    port = free_port()
    env = script_env({"RUN_DIR": str(tmp_path), "SERVED_NAME": "fg", "SERVE_TIMEOUT": "300"})
    proc = subprocess.Popen([str(SCRIPT), str(tiny_model_dir), str(port), "2", "512"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    children: list[int] = []
    try:
        wait_for_health(f"http://127.0.0.1:{port}", timeout_s=300, proc=proc)
        tree = psutil.Process(proc.pid).children(recursive=True)
        children = [c.pid for c in tree]
        assert any("vllm" in " ".join(c.cmdline()) for c in tree), "the vLLM process should be running"
        assert isinstance(_chat(f"http://127.0.0.1:{port}/v1", "fg"), str)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:  # the test failed: leave nothing behind (vLLM has its own session)
            children += [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
            os.killpg(proc.pid, signal.SIGKILL)
            for pid in children:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _running(pids=children):
        time.sleep(0.5)
    assert not _running(pids=children), "vLLM outlived Ctrl-C"


# ------------------------------------------------------------------------------------ issue 23

def test_a_hub_id_is_served_under_its_full_name_and_offline_only_when_asked(tiny_model_dir):
    hub = "Qwen/Qwen2.5-Coder-7B-Instruct"
    online = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    proc = subprocess.run([str(SCRIPT), "--dry-run", hub], env=online | {"QM_DEVICE": "cpu"}, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    argv = shlex.split(proc.stdout)
    assert flag(argv, "--model") == hub and flag(argv, "--served-model-name") == hub
    assert not any(a.startswith("HF_HUB_OFFLINE") for a in argv), "the script must not force the hub off"
    argv = dry_run(hub, env={"QM_DEVICE": "cuda", "HF_HUB_OFFLINE": "1"})  # the environment says offline
    assert "HF_HUB_OFFLINE=1" in argv and argv[argv.index("serve") + 1] == hub
    # a local directory still wins, and a path that is neither is one clear line
    assert flag(dry_run(str(tiny_model_dir), env={"QM_DEVICE": "cpu"}), "--model") == str(tiny_model_dir)
    bad = serve("--dry-run", "fine-tuning/merged_models/not-merged-yet")
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "hub id" in bad.stderr


def test_options_after_model_are_options_not_max_seqs(tiny_model_dir):
    for args in ([str(tiny_model_dir), "--dry-run"], [str(tiny_model_dir), "8123", "--dry-run", "-", "512"]):
        proc = serve(*args, env={"QM_DEVICE": "cpu"})
        assert proc.returncode == 0, proc.stderr
        argv = shlex.split(proc.stdout.strip())
        assert flag(argv, "--max-num-seqs") == "9", argv


@pytest.mark.slow
def test_a_dying_vllm_shows_the_root_cause_and_the_log(tiny_model_dir, serve_python, tmp_path):
    """A corrupt weights file: vLLM's last lines say "See root cause above"; the script shows the
    first exception of the log (safetensors' error) and where the log is."""
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])  # header cut short
    env = {"RUN_DIR": str(tmp_path / "run"), "SERVE_TIMEOUT": "300"}
    proc = serve("--background", str(broken), str(free_port()), "2", "256", env=env, timeout=400)
    assert proc.returncode == 1, proc.stderr
    line = next((x for x in proc.stderr.splitlines() if "root cause (the first exception in the log)" in x), "")
    assert "Error" in line and "See root cause above" not in line, proc.stderr[-3000:]
    assert f"full log: {tmp_path / 'run'}" in proc.stderr
