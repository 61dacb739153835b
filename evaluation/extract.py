"""Pull the Python program out of a model reply (rules in docs/evaluation.md, "Code extraction" and
"Whole answers")."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = {"python", "py", "python3", "py3", "ipython", "pycon"}
_BUILD_MARKERS = (
    "QuantumCircuit(", "efficient_su2(", "EfficientSU2(", "real_amplitudes(", "RealAmplitudes(",
    "TwoLocal(", "n_local(", "NLocal(", "excitation_preserving(", "ExcitationPreserving(",
    "PauliTwoDesign(", "pauli_two_design(", ".compose(", ".append(",
)
_QISKIT_START = re.compile(r"^(from qiskit|import qiskit)", re.MULTILINE)
_MAX_TRIM_LINES = 200
_MAX_FALLBACKS = 4
_MAGIC = re.compile(r"^[%!]")


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


_NEWLINE = re.compile(r"\r\n|\r|\n")


def source_lines(text: str) -> list[str]:
    """Lines as Python's tokenizer sees them (ended by \\n, \\r\\n or \\r only): str.splitlines() also breaks at
    U+2028, U+0085, form feeds ..., which a string literal may hold."""
    return _NEWLINE.split(text)


def _qiskit_fallback(reply: str) -> str | None:
    """From the first `from qiskit`/`import qiskit` line: the longest prefix that compiles, else the
    seed's rule (up to the first blank line)."""
    m = _QISKIT_START.search(reply)
    if not m:
        return None
    lines = source_lines(reply[m.start():].rstrip())
    for cut in range(len(lines), max(0, len(lines) - _MAX_TRIM_LINES), -1):
        candidate = "\n".join(lines[:cut]).strip()
        if candidate and syntax_ok(candidate)[0]:
            return candidate
    seed = re.search(r"(from qiskit.*?|import qiskit.*?)(?:\n\n|\Z)", reply[m.start():], re.DOTALL)
    return seed.group(1).strip() if seed else None


@dataclass
class Extraction:
    """What to run for one reply (rules: docs/evaluation.md, "Code extraction" and "Whole answers").

    `code` runs first. `fallbacks` (single fences, best first) run one by one in the same sandbox only
    if `code` raises or leaves no circuit; the first that runs and leaves a circuit is judged."""
    code: str | None
    fallbacks: list[str] = field(default_factory=list)
    rule: str = "none"


def _clean_python(body: str, tag: str) -> str:
    """A python fence as a file would hold it: an interactive session (`>>>` prompts) keeps only its
    input lines; IPython magics and shell escapes (`%matplotlib inline`, `!pip install ...`) are dropped."""
    lines = source_lines(body)
    if tag == "pycon" or any(line.startswith(">>>") for line in lines):
        lines = [line[4:] if len(line) > 3 else "" for line in lines if line.startswith((">>>", "..."))]
    return "\n".join(line for line in lines if not _MAGIC.match(line)).strip()


def _is_code(body: str) -> bool:
    """An untagged fence is code when it compiles and does something: printed output such as
    `{'0000': 512}`, `-7.4641`, `Energy: -7.46` or a drawn circuit is not."""
    try:
        tree = ast.parse(body)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, (ast.Constant, ast.Dict, ast.List, ast.Tuple,
                                                                   ast.Set, ast.Name, ast.UnaryOp, ast.Attribute)):
            continue
        if isinstance(node, ast.AnnAssign) and node.value is None:
            continue
        return True
    return False


def _ranked(blocks: list[str]) -> list[str]:
    """Blocks in pick_block's order of preference (circuit builders first)."""
    order = sorted(range(len(blocks)), key=lambda i: (*_build_score(blocks[i]), i), reverse=True)
    return [blocks[i] for i in order]


def _combine(blocks: list[str], rule: str) -> Extraction:
    """The whole-answer rule for several fences of one kind."""
    if len(blocks) == 1:
        return Extraction(blocks[0], [], rule)
    compiling = [b for b in blocks if syntax_ok(b)[0]]
    singles = [b for b in _ranked(compiling) if _build_score(b)[0]][:_MAX_FALLBACKS]
    whole = "\n\n".join(blocks)
    if len(compiling) == len(blocks) and syntax_ok(whole)[0]:
        return Extraction(whole, singles, "whole answer")
    if not singles:
        # No fence that compiles builds a circuit: judge the best fence as it is (it fails the syntax check).
        return Extraction(pick_block(blocks), [], "best fence")
    joined = "\n\n".join(compiling)
    if len(compiling) > 1 and syntax_ok(joined)[0]:
        return Extraction(joined, singles, "whole answer without the fences that do not compile")
    return Extraction(singles[0], singles[1:], "best fence")


def extract_program(reply: str | None) -> Extraction:
    """Python fences first (other languages and printed output skipped), combined by the whole-answer
    rule; then untagged fences that hold code, the same way; then the seed's fallbacks."""
    if reply is None or not reply.strip():
        return Extraction(None, [], "no code")
    blocks = fenced_blocks(reply)
    python = [c for c in (_clean_python(body, tag) for tag, body in blocks if tag in _PYTHON_TAGS) if c]
    if python:
        return _combine(python, "single fence")
    untagged = [body.strip() for tag, body in blocks if tag == "" and body.strip() and _is_code(body)]
    if untagged:
        return _combine(untagged, "single fence")
    fallback = _qiskit_fallback(reply)
    if fallback:
        return Extraction(fallback, [], "qiskit lines")
    if "<|im_start|>assistant" in reply:
        tail = reply.split("<|im_start|>assistant")[-1].strip() or None
        return Extraction(tail, [], "after <|im_start|>assistant")
    if blocks:  # only other languages (bash, json, ...) or printed output: nothing to run
        return Extraction(None, [], "no code")
    return Extraction(reply.strip(), [], "reply")


def extract_code(reply: str | None) -> str | None:
    """The code that runs first for a reply (extract_program(reply).code).

    Returns None for an empty reply or one whose only fences are other languages; otherwise the seed's
    last resort is the whole reply (which then usually fails the syntax check, as it did in the seed).
    """
    return extract_program(reply).code
