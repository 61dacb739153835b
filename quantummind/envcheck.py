"""The seed's `check_venv`: fail in one line when a script runs in the wrong environment."""

from __future__ import annotations

import importlib.util
import sys

from quantummind.paths import TRAIN_VENV, running_in


class WrongEnvironment(SystemExit):
    pass


def require(*modules: str) -> None:
    """Exit with a one-line message naming the right environment if a module is missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        where = "this environment" if not running_in(TRAIN_VENV) else str(TRAIN_VENV)
        print(
            f"error: {', '.join(missing)} not importable in {where} ({sys.executable}); "
            f"run it with {TRAIN_VENV}/bin/python (create it with `make setup`)",
            file=sys.stderr,
        )
        raise WrongEnvironment(2)
