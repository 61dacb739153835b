"""Pull the Python program out of a model reply (rules in docs/evaluation.md, "Code extraction")."""

from __future__ import annotations

import re

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = {"python", "py", "python3", "py3", "ipython", "pycon"}
_BUILD_MARKERS = (
    "QuantumCircuit(", "efficient_su2(", "EfficientSU2(", "real_amplitudes(", "RealAmplitudes(",
    "TwoLocal(", "n_local(", "NLocal(", "excitation_preserving(", "ExcitationPreserving(",
    "PauliTwoDesign(", "pauli_two_design(", ".compose(", ".append(",
)
_QISKIT_START = re.compile(r"^(from qiskit|import qiskit)", re.MULTILINE)
_MAX_TRIM_LINES = 200


def fenced_blocks(reply: str) -> list[tuple[str, str]]:
    """(language tag lower-cased, body) for every fenced block; an unclosed last fence runs to the end."""
    return [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(reply)]


def _build_score(code: str) -> tuple[int, int, int]:
    markers = sum(code.count(m) for m in _BUILD_MARKERS)
    builds = int("QuantumCircuit" in code or markers > 0)
    return builds, markers, len(code)


def pick_block(blocks: list[str]) -> str:
    """Among several blocks, the one that builds a circuit: most builder markers, then longest, then last."""
    best_i = max(range(len(blocks)), key=lambda i: (*_build_score(blocks[i]), i))
    return blocks[best_i]


def syntax_ok(code: str | None) -> tuple[bool, str | None]:
    """(compiles, why not): the syntax check of scoring, also used to trim the qiskit fallback."""
    if code is None:
        return False, "no code in reply"
    try:
        compile(code, "reply.py", "exec", dont_inherit=True)
    except SyntaxError as exc:
        return False, f"SyntaxError: {exc.msg} (line {exc.lineno})"
    except (ValueError, RecursionError, MemoryError, OverflowError) as exc:
        return False, f"{type(exc).__name__}: {exc}"[:200]
    return True, None


def _qiskit_fallback(reply: str) -> str | None:
    """From the first `from qiskit`/`import qiskit` line: the longest prefix that compiles, else the
    seed's rule (up to the first blank line)."""
    m = _QISKIT_START.search(reply)
    if not m:
        return None
    lines = reply[m.start():].rstrip().splitlines()
    for cut in range(len(lines), max(0, len(lines) - _MAX_TRIM_LINES), -1):
        candidate = "\n".join(lines[:cut]).strip()
        if candidate and syntax_ok(candidate)[0]:
            return candidate
    seed = re.search(r"(from qiskit.*?|import qiskit.*?)(?:\n\n|\Z)", reply[m.start():], re.DOTALL)
    return seed.group(1).strip() if seed else None


def extract_code(reply: str) -> str | None:
    """Fenced python blocks first (other languages skipped), then untagged fences, then the seed's fallbacks.

    Returns None only for an empty reply; otherwise the seed's last resort is the whole reply
    (which then usually fails the syntax check, as it did in the seed).
    """
    if reply is None or not reply.strip():
        return None
    blocks = fenced_blocks(reply)
    python = [body for tag, body in blocks if tag in _PYTHON_TAGS and body.strip()]
    if python:
        return pick_block(python).strip()
    untagged = [body for tag, body in blocks if tag == "" and body.strip()]
    if untagged:
        return pick_block(untagged).strip()
    fallback = _qiskit_fallback(reply)
    if fallback:
        return fallback
    if "<|im_start|>assistant" in reply:
        return reply.split("<|im_start|>assistant")[-1].strip() or None
    if blocks:  # only non-python fences (bash, json, ...): nothing to run
        return None
    return reply.strip()
