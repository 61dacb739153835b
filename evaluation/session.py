"""A kept-alive sandbox fork server: one `python -m evaluation.sandbox CFG` reused across scoring calls.

`run_jobs` starts a fork server per call and closes its stdin when the jobs are sent: right for one
`evaluation score`, wasteful for a GRPO reward called every step (the server's start-up, imports and
isolation probes cost seconds each time). A SandboxSession starts the same server the same way (same
command, same scrubbed environment, same cfg for every job of the session), lazily on the first
`run`, keeps it alive, sends each call's jobs as JSON lines and reads the results back by id. It is
shut down by `close()` (or at interpreter exit), and restarted with a logged warning when it died
between calls. Every defence of the sandbox applies unchanged: the server is the very same program.

    session = SandboxSession(cfg)        # cfg as run_jobs takes it (workers, limits, kinds, ...)
    results = session.run(jobs)          # {job id: result}, each job with an id unique in the call
    session.close()
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import subprocess
import sys
import threading
from typing import Any

from evaluation.sandbox import SandboxError, scrubbed_env

log = logging.getLogger(__name__)


def _stop(proc: subprocess.Popen, grace_s: float) -> None:
    """Wait `grace_s` for the server to exit on its own, then SIGTERM (it removes its dirs and cgroups),
    then SIGKILL."""
    for signal_it in (None, proc.terminate, proc.kill):
        if signal_it is not None:
            signal_it()
        try:
            proc.wait(timeout=grace_s if signal_it is None else 5)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


class _DiedIdle(SandboxError):
    """The server was dead before it answered anything of this call."""


class SandboxSession:
    """One fork server with a fixed cfg, started on first use and reused; thread-safe (one call at a time)."""

    def __init__(self, cfg: dict[str, Any]):
        self.cfg = dict(cfg)
        self.isolation: dict[str, Any] = {}
        self.starts = 0  # how many servers this session started (1 + restarts)
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._next = 0  # wire ids are the session's own, so a reply cannot reuse an id of another call
        atexit.register(self.close)

    # -- lifecycle -----------------------------------------------------------------------------------

    def _start(self) -> subprocess.Popen:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = scrubbed_env({"PYTHONPATH": os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])})
        proc = subprocess.Popen([sys.executable, "-m", "evaluation.sandbox", json.dumps(self.cfg)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd="/",
                                start_new_session=True)
        ready = proc.stdout.readline()
        if not ready:
            status = proc.wait()
            raise SandboxError(f"sandbox server exited with status {status} before it was ready")
        hello = json.loads(ready)
        self.isolation = hello["isolation"]
        for warning in self.isolation.get("warnings", []):
            log.warning("sandbox: %s", warning)
        self.starts += 1
        return proc

    def _ensure(self) -> subprocess.Popen:
        if self._proc is not None and self._proc.poll() is not None:
            log.warning("sandbox session: the fork server died (status %s); starting a new one",
                        self._proc.returncode)
            self._proc = None
        if self._proc is None:
            self._proc = self._start()
        return self._proc

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def close(self) -> None:
        """Stop the server (stdin EOF: it finishes nothing new, removes its dirs and cgroups); idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()
        except OSError:
            pass
        _stop(proc, grace_s=10)
        if proc.stdout:
            proc.stdout.close()

    def _abort(self) -> None:
        """The server broke mid-call or the caller was interrupted: kill it (its forks die with it)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _stop(proc, grace_s=0)

    def __enter__(self) -> SandboxSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- jobs ----------------------------------------------------------------------------------------

    def run(self, jobs: list[dict]) -> dict[Any, dict]:
        """Run `jobs` (each with an `id` unique within the call); {id: result} once all are back. A server
        found dead before it returned anything of this call (it died between calls) is restarted once."""
        ids = [job["id"] for job in jobs]
        if len(set(ids)) != len(ids):
            raise ValueError("job ids must be unique within one call")
        if not jobs:
            return {}
        with self._lock:
            try:
                return self._run_once(jobs)
            except _DiedIdle as exc:
                log.warning("sandbox session: the fork server died (%s); starting a new one", exc)
                return self._run_once(jobs)

    def _run_once(self, jobs: list[dict]) -> dict[Any, dict]:
        proc = self._ensure()
        wire: dict[int, Any] = {}
        lines = []
        for job in jobs:
            wire[self._next] = job["id"]
            lines.append(json.dumps({**job, "id": self._next}) + "\n")
            self._next += 1
        results: dict[Any, dict] = {}
        try:
            feeder = threading.Thread(target=self._feed, args=(proc, "".join(lines).encode()), daemon=True)
            feeder.start()
            while len(results) < len(jobs):
                line = proc.stdout.readline()
                if not line:
                    status = proc.wait()
                    if not results:
                        raise _DiedIdle(f"status {status}")
                    raise SandboxError(f"sandbox server died after {len(results)}/{len(jobs)} jobs (status {status})")
                out = json.loads(line)
                key = out.pop("id")
                if key in wire:  # ids of this call only (an aborted call's server is never reused)
                    results[wire.pop(key)] = out
            feeder.join()
        except BaseException:
            self._abort()
            raise
        return results

    @staticmethod
    def _feed(proc: subprocess.Popen, data: bytes) -> None:
        try:
            proc.stdin.write(data)
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the reader sees the dead server
