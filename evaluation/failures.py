"""Why a reply failed: the failure vocabulary shared by the circuit judge and the HumanEval judge.

`failure` in results.jsonl is null when the reply passed, otherwise exactly one of FAILURES (the
HumanEval judge adds ASSERTION and EXCLUDED). JUDGE_ERROR is not a failure of the reply: the judge
could not decide, and such replies are left out of every rate (docs/evaluation.md).
"""

from __future__ import annotations

FAILURES = ("no_code", "syntax_error", "removed_api", "missing_module", "needs_network", "runtime_error",
            "timeout", "resource_limit", "sandbox_denied", "no_circuit", "wrong_qubits", "too_deep",
            "no_parameters", "invalid_circuit")
ASSERTION, EXCLUDED = "assertion", "excluded"
JUDGE_ERROR = "judge_error"

_BY_EXCEPTION = {"SyntaxError": "syntax_error", "IndentationError": "syntax_error", "TabError": "syntax_error",
                 "ModuleNotFoundError": "missing_module", "ImportError": "missing_module",
                 "MemoryError": "resource_limit", "RecursionError": "resource_limit",
                 "PermissionError": "sandbox_denied"}


def classify_exec_error(error: str | None) -> str | None:
    """The failure kind of an exception the reply's own code raised, given as "ExcType: message"
    (the sandbox's exec_error); None for no error."""
    if not error:
        return None
    exc_type = error.split(":", 1)[0].strip().rsplit(".", 1)[-1]
    return _BY_EXCEPTION.get(exc_type, "runtime_error")
