"""The client side: start a fork server (`python -m evaluation.sandbox`) and stream jobs through it.

`run_jobs` scores one batch with a server of its own; `Session` keeps one server alive across batches (a
training run's reward calls it every step), restarting it with a logged warning if it died.
"""

from __future__ import annotations

import atexit
import itertools
import json
import logging
import os
import subprocess
import sys
import threading
from typing import Iterable, Iterator

from evaluation.sandbox.policy import scrubbed_env

log = logging.getLogger(__name__)

# The server imports this very checkout of the package, whatever the interpreter's install points at.
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class SandboxError(RuntimeError):
    """The fork server itself failed (not a reply): scoring cannot be trusted."""


class Session:
    """One fork server with a fixed `cfg` (workers, limits, the kinds' settings), started on first use and reused
    by every `stream`/`run` call until `close()` (or interpreter exit). A server that died is restarted on the
    next call, with a warning; a batch it died in raises SandboxError."""

    def __init__(self, cfg: dict, *, restart: bool = True):
        self.cfg = cfg
        self.restart = restart
        self.isolation: dict = {}
        self.starts = 0
        self._proc: subprocess.Popen | None = None
        self._ids = itertools.count()
        self._lock = threading.Lock()

    # ----------------------------------------------------------------------------------------- life cycle
    def _start(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._proc is not None:
            if not self.restart:
                raise SandboxError(f"sandbox server is gone (status {self._proc.returncode})")
            log.warning("sandbox server exited (status %s); starting a new one", self._proc.returncode)
        env = scrubbed_env({"PYTHONPATH": os.pathsep.join([_CHECKOUT, *filter(None, [os.environ.get("PYTHONPATH")])])})
        proc = subprocess.Popen([sys.executable, "-m", "evaluation.sandbox", json.dumps(self.cfg)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd="/",
                                start_new_session=True)
        ready = proc.stdout.readline()
        if not ready:
            raise SandboxError(f"sandbox server exited with status {proc.wait()} before it was ready")
        hello = json.loads(ready)
        self.isolation = hello["isolation"]
        if self.starts == 0:
            for w in self.isolation.get("warnings", []):
                log.warning("sandbox: %s", w)
        self.starts += 1
        if self.starts == 1:
            atexit.register(self.close)
        self._proc = proc
        return proc

    def close(self) -> None:
        """End the server: its running sandboxes are killed, its directories and cgroups removed."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _abort(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()  # the server kills its running sandboxes and removes its dirs/cgroups
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None:
            self._proc = proc  # remembered as dead: the next call restarts it (with a warning)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------------------------------- jobs
    def stream(self, jobs: Iterable[dict], *, progress: bool = False, desc: str = "scoring") -> Iterator[tuple[int, dict]]:
        """Feed `jobs` (each with an int `id`), yield (id, result) as results arrive. One batch at a time."""
        jobs = list(jobs)
        with self._lock:
            proc = self._start()
            tagged = {}
            for job in jobs:
                tagged[next(self._ids)] = job["id"]
            wire = [dict(job, id=tag) for tag, job in zip(tagged, jobs)]
            if len(wire) < len(jobs):
                raise ValueError("duplicate job ids in one batch")
            bar = None
            try:
                def feed() -> None:
                    try:
                        for job in wire:
                            proc.stdin.write((json.dumps(job) + "\n").encode())
                        proc.stdin.flush()
                    except (BrokenPipeError, OSError, ValueError):
                        pass

                threading.Thread(target=feed, daemon=True).start()
                if progress:
                    from tqdm import tqdm

                    bar = tqdm(total=len(jobs), desc=desc, unit="job")
                for seen in range(len(wire)):
                    line = proc.stdout.readline()
                    if not line:
                        raise SandboxError(f"sandbox server died after {seen}/{len(jobs)} jobs (status {proc.wait()})")
                    out = json.loads(line)
                    tag = int(out.pop("id"))
                    if bar:
                        bar.update(1)
                    yield tagged[tag], out
            except BaseException:
                # Ctrl-C or a broken server: stop now (its forks die with it through PR_SET_PDEATHSIG).
                self._abort()
                raise
            finally:
                if bar:
                    bar.close()

    def run(self, jobs: Iterable[dict], **kwargs) -> dict[int, dict]:
        """Results by job id (every job answered, or SandboxError)."""
        return dict(self.stream(jobs, **kwargs))


def run_jobs(jobs: list[dict], cfg: dict, *, progress: bool = False, desc: str = "scoring",
             info: dict | None = None) -> Iterator[tuple[int, dict]]:
    """Start a fork server with `cfg` (workers, limits, the kinds' settings), feed it `jobs` (each with
    an int `id`), yield (id, result) as results arrive. `info`, if given, receives the isolation report."""
    with Session(cfg, restart=False) as session:
        session._start()
        if info is not None:
            info.update(session.isolation)
        yield from session.stream(jobs, progress=progress, desc=desc)
