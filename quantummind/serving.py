"""Small helpers for talking to a local OpenAI-compatible server process."""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from quantummind.paths import offline_env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(base_url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    """Poll GET {base_url}/health until it answers 200; fail early if `proc` dies."""
    deadline = time.monotonic() + timeout_s
    url = base_url.rstrip("/").removesuffix("/v1") + "/health"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s")


SERVE_SCRIPT = Path(__file__).resolve().parent.parent / "serve_vllm.sh"


@dataclass
class BackgroundServer:
    """A vLLM server started with `serve_vllm.sh --background`; `stop()` ends it the same way."""

    base_url: str
    model: str
    port: int
    pid: int
    log: Path
    env: dict[str, str]

    def stop(self) -> None:
        subprocess.run([str(SERVE_SCRIPT), "stop", str(self.port)], env=self.env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)

    def __enter__(self) -> "BackgroundServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_background_server(
    model_dir: str | Path, name: str, run_dir: str | Path, *, max_seqs: int = 4, max_len: int | None = 1024,
    timeout_s: int = 300, quiet: bool = True, extra_env: dict[str, str] | None = None,
) -> BackgroundServer:
    """Serve `model_dir` as `name` on a free loopback port through serve_vllm.sh, pid file and
    log in `run_dir`. Raises RuntimeError (with the log's tail) when the server does not come up."""
    run_dir = Path(run_dir)
    port = free_port()
    env = offline_env()
    env.update({"RUN_DIR": str(run_dir), "SERVED_NAME": name, "SERVE_TIMEOUT": str(timeout_s)}, **(extra_env or {}))
    cmd = [str(SERVE_SCRIPT), "--background", str(model_dir), str(port), str(max_seqs),
           "-" if max_len is None else str(max_len)]
    out = subprocess.PIPE if quiet else None
    proc = subprocess.run(cmd, env=env, stdout=out, stderr=out, text=True, timeout=timeout_s + 120)
    log = run_dir / f"vllm-{port}.log"
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise RuntimeError(f"serve_vllm.sh exited {proc.returncode}: {(proc.stderr or '').strip()[-2000:]}\n{tail}")
    pid = int((run_dir / f"vllm-{port}.pid").read_text())
    return BackgroundServer(f"http://127.0.0.1:{port}/v1", name, port, pid, log, env)


def serve_error(serve_output: str) -> str:
    """The line of serve_vllm.sh's output (a start_background_server RuntimeError) that says why the server did
    not start: vLLM's root cause, else the script's own error line."""
    lines = [ln.strip() for ln in serve_output.splitlines() if ln.strip()]
    for marker in ("root cause (the first exception in the log): ", "serve_vllm.sh: error: "):
        found = next((ln.split(marker, 1)[1] for ln in lines if marker in ln), None)
        if found:
            return found[:400]
    return lines[0][:400] if lines else "no output"


def lora_problem(adapter_dir: Path) -> str | None:
    """Why vLLM cannot serve `adapter_dir` as a LoRA module (checked before a server starts), or None."""
    try:
        cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        return f"unreadable adapter_config.json ({exc})"
    if cfg.get("modules_to_save"):
        return (f"has modules_to_save {cfg['modules_to_save']} (full copies of those weights), which vLLM cannot "
                "serve as a LoRA adapter")
    if cfg.get("use_dora"):
        return "is a DoRA adapter (use_dora), which vLLM cannot serve as a LoRA module"
    return None


class ServerStartError(RuntimeError):
    """Why serve_vllm.sh could not start a server, in one line (vLLM's root cause when it has one)."""


@contextmanager
def lora_modules(adapters: dict[str, Path]) -> Iterator[str]:
    """The LORA_MODULES value (`name=path ...`) for serve_vllm.sh. It is whitespace-separated, so each adapter
    goes in through a link in a fresh temporary folder (removed afterwards); the real path may have spaces."""
    with tempfile.TemporaryDirectory(prefix="qm-lora-") as links:
        if any(c.isspace() for c in links):
            raise ServerStartError(f"the temporary folder {links!r} has whitespace in its path: set TMPDIR to one "
                                   "without")
        mods = []
        for name, path in adapters.items():
            (Path(links) / name).symlink_to(Path(path).resolve(), target_is_directory=True)
            mods.append(f"{name}={Path(links) / name}")
        yield " ".join(mods)


@contextmanager
def served(model_dir: str | Path, name: str, run_dir: str | Path, *, adapters: dict[str, Path] | None = None,
           **kwargs) -> Iterator[BackgroundServer]:
    """A background server for the body of a `with`, `adapters` (name -> adapter folder) served as LoRA modules on
    `model_dir`; stopped afterwards. ServerStartError (one line) when it does not start."""
    with lora_modules(adapters or {}) as mods:  # the links live as long as the server: vLLM loads on first use
        try:
            server = start_background_server(model_dir, name, run_dir, extra_env={"LORA_MODULES": mods} if adapters
                                             else None, **kwargs)
        except RuntimeError as exc:
            raise ServerStartError(serve_error(str(exc))) from None
        with server:
            yield server
