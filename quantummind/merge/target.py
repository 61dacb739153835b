"""Where a merge may write (issue 23): never over, around or inside one of its inputs, the working
directory, a home or a filesystem root; an existing folder is replaced only when an earlier merge
wrote it (it holds merge_report.json)."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from quantummind.merge.errors import MergeError

REPORT_NAME = "merge_report.json"


@dataclass(frozen=True)
class Input:
    """A path the merge reads (or the user keeps): the output may not touch it."""

    what: str  # "the base model", "the config", ...
    path: Path


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _homes() -> set[Path]:
    homes = {Path.home()}
    try:
        homes |= {Path(p.pw_dir) for p in pwd.getpwall() if p.pw_dir and p.pw_dir != "/"}
    except OSError:  # no passwd database: the current user's home is still known
        pass
    return {h.resolve() for h in homes}


def _refuse(target: Path, relation: str, what: str, path: Path) -> MergeError:
    shown = "" if path == target else f" ({path})"
    return MergeError(f"--output {target} {relation} {what}{shown}: refusing to write there, "
                      "choose another --output")


def check_output_target(target: Path, inputs: list[Input], *, force: bool) -> None:
    """Raise MergeError (nothing touched) unless `target` (absolute, resolved) is a safe place for
    the merged model: see the module docstring. Run before any work."""
    if target.parent == target or os.path.ismount(target):
        raise MergeError(f"--output {target} is a filesystem root: refusing to write there, choose another --output")
    cwd = Path.cwd().resolve()
    if _within(cwd, target):
        raise _refuse(target, "is" if cwd == target else "contains", "the working directory", cwd)
    for home in sorted(_homes()):
        if _within(home, target):
            raise _refuse(target, "is" if home == target else "contains", "a home directory", home)
    for item in inputs:
        path = item.path.expanduser().resolve()
        if _within(path, target):
            raise _refuse(target, "is" if path == target else "contains", item.what, path)
        if _within(target, path):
            raise _refuse(target, "lies inside", item.what, path)
    if target.exists() and not target.is_dir():
        raise MergeError(f"output {target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()):
        if not force:
            raise MergeError(f"output {target} is not empty: pass --force to replace it")
        if not (target / REPORT_NAME).is_file():
            raise MergeError(f"output {target} is not empty and no merge wrote it (no {REPORT_NAME}): "
                             "--force replaces only an earlier merge's output; choose another --output")


def check_writable(target: Path) -> None:
    """The folder that will hold the output must take a new entry, and an existing output must be
    replaceable; checked before any work (root passes os.access, so the caller also probes by
    creating its temporary folder before the work starts)."""
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise MergeError(f"--output {target}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MergeError(f"--output {target}: {parent} is not writable")
    if target.is_dir() and not os.access(target, os.W_OK | os.X_OK):
        raise MergeError(f"--output {target} is not writable, so it cannot be replaced")
