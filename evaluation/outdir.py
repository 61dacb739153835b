"""Check an output folder before the work starts (issue 23): an unwritable --out is an environment
error (one line, exit 2), not a traceback after minutes of scoring."""

from __future__ import annotations

import tempfile
from pathlib import Path


def out_dir_problem(out: Path, flag: str = "--out") -> str | None:
    """Whether `out` can be created and written: create it (and its parents), write a probe file, then remove
    the probe and the folders this check created (a command that refuses later leaves nothing behind). A
    one-line message if that fails."""
    created: list[Path] = []
    try:
        if out.exists() and not out.is_dir():
            return f"{flag} {out} exists and is not a directory"
        missing = [p for p in (out, *out.parents) if not p.exists()]
        out.mkdir(parents=True, exist_ok=True)
        created = missing  # deepest first
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-probe-"):
            pass
    except OSError as exc:
        return f"{flag} {out} cannot be written: {exc.strerror or exc}"
    finally:
        for p in created:
            try:
                p.rmdir()
            except OSError:
                break
    return None
