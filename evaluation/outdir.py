"""Check an output folder before the work starts (issue 23): an unwritable --out is an environment
error (one line, exit 2), not a traceback after minutes of scoring."""

from __future__ import annotations

import tempfile
from pathlib import Path


def out_dir_problem(out: Path, flag: str = "--out") -> str | None:
    """Create `out` (and its parents) and write a probe file in it; a one-line message if that fails."""
    try:
        if out.exists() and not out.is_dir():
            return f"{flag} {out} exists and is not a directory"
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-probe-"):
            pass
    except OSError as exc:
        return f"{flag} {out} cannot be written: {exc.strerror or exc}"
    return None
