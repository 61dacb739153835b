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
import sys
from typing import Iterable

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


def preload(modules: Iterable[str]) -> list[str]:
    """Import `modules` (matplotlib on Agg) in the fork server; returns those that are not installed."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001  (a broken optional package must not stop the server)
            missing.append(name)
            log.warning("sandbox preload: %s could not be imported (%s)", name, exc)
    # qiskit_ibm_runtime fixes its account file at import time from the fork server's HOME, which reply
    # code may not read (PermissionError). Its readers expand "~" again at call time, so a reply sees what
    # a fresh interpreter in the sandbox sees: no saved account in its own HOME (AccountNotFoundError).
    management = sys.modules.get("qiskit_ibm_runtime.accounts.management")
    if management is not None and hasattr(management, "_DEFAULT_ACCOUNT_CONFIG_JSON_FILE"):
        management._DEFAULT_ACCOUNT_CONFIG_JSON_FILE = os.path.join("~", ".qiskit", "qiskit-ibm.json")
    return missing
