"""Session builds shared by the pytest-xdist workers of one run."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A session build shared by every pytest-xdist worker (`make test` runs 2 with --dist loadfile): the first
    worker to ask builds it into a folder of this run's base temp, the others wait on a file lock and reuse it
    (without xdist: once per session, as before). Tests that change a build work on a copy of it."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the workers' base temps share this parent, fresh for each run
    target = base / f"shared-{name}"
    with FileLock(f"{target}.lock"):
        if not (target / ".built").exists():
            shutil.rmtree(target, ignore_errors=True)  # a build that failed half-way
            target.mkdir(parents=True)
            build(target)
            (target / ".built").touch()
    return target
