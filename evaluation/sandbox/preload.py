"""The Qiskit stack reply code imports, preloaded once in the sandbox's fork server (docs/sandbox.md,
"What reply code can import").

A fresh import of qiskit_algorithms, qiskit_ibm_runtime and matplotlib costs ~3 s per reply on a busy
2-core machine; imported once in the fork server it costs ~0. The fork server imports only what at
least one job's code mentions (`modules_used`), so a run whose replies use none of it starts as fast as
before. Importing qiskit_aer loads libgomp under the server's OMP_NUM_THREADS=1 and starts no thread, so
OpenMP still works in every fork (tests/eval/test_eval_real_replies.py runs Aer with 4 threads there).
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterable, Iterator

log = logging.getLogger(__name__)

# (text that marks a use in reply code, modules to import for it), in import order.
REPLY_STACK: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("qiskit_aer", ("qiskit_aer", "qiskit_aer.primitives")),
    ("qiskit_algorithms", ("qiskit_algorithms", "qiskit_algorithms.optimizers")),
    ("qiskit_ibm_runtime", ("qiskit_ibm_runtime", "qiskit_ibm_runtime.fake_provider")),
    ("mpl", ("matplotlib.pyplot", "qiskit.visualization", "pylatexenc.latexencode")),
    ("matplotlib", ("matplotlib.pyplot", "qiskit.visualization", "pylatexenc.latexencode")),
    ("scipy", ("scipy.optimize",)),
)


def modules_used(codes: Iterable[str | None]) -> list[str]:
    """The REPLY_STACK modules that at least one of `codes` mentions, without repeats."""
    text = "\n".join(c for c in codes if c)
    out: list[str] = []
    for marker, modules in REPLY_STACK:
        if marker in text:
            out.extend(m for m in modules if m not in out)
    return out


@contextmanager
def home_expanded_at_use() -> Iterator[None]:
    """HOME="~" (and a scratch cwd) while importing: a module that computes `expanduser("~")` at import time
    (qiskit_ibm_runtime's account file, qiskit's settings.conf) keeps "~", expanded when used, in the reply,
    against the reply's own HOME: preloading must not change what the reply sees (not the caller's home)."""
    old_home, old_cwd = os.environ.get("HOME"), os.getcwd()
    scratch = tempfile.mkdtemp(prefix="qm-he-preload-")
    os.environ["HOME"] = "~"
    os.chdir(scratch)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        if old_home is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = old_home
        left = os.listdir(scratch)
        if left:
            log.warning("sandbox preload: imports wrote %s under their working directory", left)
        shutil.rmtree(scratch, ignore_errors=True)


def preload(modules: Iterable[str], missing_level: int = logging.WARNING) -> list[str]:
    """Import `modules` (matplotlib on Agg) in the fork server, under home_expanded_at_use (qiskit_ibm_runtime
    fixes its account file from HOME at import: with "~" kept, a reply sees what a fresh interpreter in the
    sandbox sees, no saved account in its own HOME, AccountNotFoundError, not PermissionError on the
    server's). Returns those that could not be imported, each logged at `missing_level`."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    missing = []
    with home_expanded_at_use():
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001  (a broken optional package must not stop the server)
                missing.append(name)
                log.log(missing_level, "sandbox preload: %s could not be imported (%s)", name, exc)
    return missing
