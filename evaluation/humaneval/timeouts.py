"""Per-task HumanEval time limits from the canonical solutions' measured times (docs/humaneval.md, "Time limits").

A fixed 30 s charges a slow machine's slowness to the model: some canonical solutions need more than that on
a busy CPU. As evalplus does, each task gets max(T, K x the canonical solution's time on this machine),
T = 30 s (upstream's limit) and K = 4. The times come from `humaneval canonical`, cached per machine and
stack (host, CPU count, Python, and the versions of the packages the tasks import) in
~/.cache/quantummind/humaneval_times.json ($QM_CACHE_DIR overrides the folder). `--timeout` overrides it all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

BASE_S = 30.0
FACTOR = 4.0
STACK = ("qiskit", "qiskit-aer", "qiskit-ibm-runtime", "qiskit-algorithms", "numpy", "scipy", "matplotlib")


def cache_path() -> Path:
    root = os.environ.get("QM_CACHE_DIR") or str(Path.home() / ".cache" / "quantummind")
    return Path(root) / "humaneval_times.json"


def fingerprint() -> str:
    """The machine and the stack the canonical times were measured on."""
    parts = [platform.node(), str(os.cpu_count()), platform.python_version()]
    for name in STACK:
        try:
            parts.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name}==none")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def save_canonical_times(results: list[dict], variant: str, path: Path | None = None) -> Path:
    """Store the canonical solutions' exec_seconds (passing ones only) for this machine and stack."""
    path = path or cache_path()
    times = {r["task_id"]: float(r["exec_seconds"]) for r in results
             if isinstance(r.get("exec_seconds"), (int, float)) and math.isfinite(r["exec_seconds"])
             and r.get("failure") in (None, "excluded")}
    data = _load(path)
    data.setdefault(fingerprint(), {})[variant] = times
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
    return path


def task_limits(variant: str, path: Path | None = None) -> dict[str, float] | None:
    """task_id -> seconds, max(BASE_S, FACTOR x canonical time), or None when this machine and stack have
    no measured times (then BASE_S for every task)."""
    times = _load(path or cache_path()).get(fingerprint(), {}).get(variant)
    if not isinstance(times, dict) or not times:
        return None
    return {tid: max(BASE_S, FACTOR * float(t)) for tid, t in times.items()}


def bucket(seconds: float) -> float:
    """Limits rounded up to BASE_S x 2**k, so that a run needs few sandbox pools (one per distinct limit)."""
    k = max(0, math.ceil(math.log2(max(seconds, BASE_S) / BASE_S) - 1e-9))
    return BASE_S * 2 ** k
