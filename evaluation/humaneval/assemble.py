"""Program assembly: a completion in any of its shapes -> the program the sandbox runs (docs/humaneval.md).

The completion is what the model returned:
  * prose with fences: the fenced python block that defines the entry point (else the longest one) is used;
    prose around an unfenced function: the lines from its first import/def on that compile;
  * a whole function (`def <entry_point>(` at column 0): kept with whatever precedes it (imports, helpers)
    and any later def/class/import; other top-level statements after it (example usage, `print(...)`,
    an `if __name__ == "__main__":` block) are dropped;
  * a function body (completions API, or a chat answer that only wrote the body): cut at the first
    top-level `def`/`class`/`if __name__`/`print(`/`assert` after its first line (a base model rambling on),
    and re-indented when its first line lost its indentation (only the first line at column 0: the
    first line is re-indented to fit) or all of it did (several lines at column 0: the whole body by 4).
Program: normal variant: prompt, the body or the whole function (its def replaces the prompt's docstring-only
one), test, `check(<entry_point>)`; hard variant: the function (with its imports), test (which already
calls check). The check call is appended only when the test does not make it.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass

from evaluation.extract import fenced_blocks, syntax_ok
from evaluation.humaneval.tasks import Task

_PYTHON_TAGS = {"python", "py", "python3", "py3", ""}
_STOP = re.compile(r"\n(?=def |class |async def |if __name__|print\(|assert )")
_CHECK_CALL = re.compile(r"^check\(", re.MULTILINE)
_TOP_RETURN = re.compile(r"^return\b", re.MULTILINE)  # never top-level code: a body that lost its indentation


@dataclass(frozen=True)
class Program:
    code: str | None      # None: nothing to run (empty completion)
    shape: str            # "function", "body" or "empty"
    from_fence: bool


def _defines(code: str, entry_point: str) -> bool:
    return re.search(rf"^(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE) is not None


def extract_completion(completion: str, entry_point: str) -> tuple[str, bool]:
    """(code, came from a fence): the python block defining entry_point, else the longest python block,
    else the completion itself."""
    blocks = [body for tag, body in fenced_blocks(completion or "") if tag in _PYTHON_TAGS and body.strip()]
    if not blocks:
        return completion or "", False
    defining = [b for b in blocks if _defines(b, entry_point)]
    return (defining[-1] if defining else max(blocks, key=len)), True


def _first_line_indent(lines: list[str]) -> tuple[int, int] | None:
    """(index of the first non-blank line, its indentation)."""
    for i, line in enumerate(lines):
        if line.strip():
            return i, len(line) - len(line.lstrip())
    return None


def fix_body(body: str, prefix: str) -> str:
    """The body, cut at top-level code after it and indented so that `prefix + body` compiles when any
    of the usual repairs makes it do so (first line re-indented; the whole body indented by 4)."""
    raw = body.replace("\t", "    ")
    body, *after = _STOP.split(raw, maxsplit=1)
    if after and _TOP_RETURN.search(after[0]):
        body = raw  # a `return` at column 0 further on: the inner def/print belongs to the unindented body
    lines = body.split("\n")
    first = _first_line_indent(lines)
    if first is None:
        return body
    i, indent = first
    if indent > 0:
        return body
    rest = [len(x) - len(x.lstrip()) for x in lines[i + 1:] if x.strip()]
    whole = textwrap.indent(textwrap.dedent(body), "    ")
    if rest and min(rest) == 0:
        # Another line at column 0 too: the whole body lost its indentation (nested blocks keep their
        # relative indentation). Re-indenting the first line alone could compile and end the function
        # early (`with open(...) as f:` would run at module level): the whole body first.
        return whole if syntax_ok(prefix + whole)[0] else body
    candidates: list[str] = []
    if any(rest):
        nxt = next(r for r in rest if r > 0)
        opens_block = lines[i].rstrip().endswith(":")
        for want in dict.fromkeys([nxt - 4 if opens_block else nxt, nxt, 4]):
            if want > 0:
                candidates.append("\n".join(lines[:i] + [" " * want + lines[i]] + lines[i + 1:]))
    candidates.append(whole)
    for cand in candidates:
        if syntax_ok(prefix + cand)[0]:
            return cand
    return candidates[-1]


def trim_function(code: str, entry_point: str) -> str:
    """Drop top-level statements after the entry point's def other than def/class/import (example usage);
    unchanged when the code does not parse (the syntax error is reported as it is)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return code
    lines = code.split("\n")
    keep: list[str] = []
    seen_entry = dropped = False
    for node in tree.body:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        is_def = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom))
        is_main = (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                   and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")
        if is_main or (seen_entry and not is_def):
            dropped = True
            continue
        keep.append("\n".join(lines[start - 1:node.end_lineno]))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
            seen_entry = True
    return "\n\n".join(keep) + "\n" if dropped else code


_CODE_START = re.compile(r"^(?:from |import |def |async def |class |@)")


def unfenced_function(text: str, entry_point: str) -> str:
    """Prose around an unfenced function: from the first import/def line, the longest run of lines that
    compiles and defines entry_point; the text unchanged when there is none."""
    lines = text.split("\n")
    start = next((i for i, line in enumerate(lines) if _CODE_START.match(line)), None)
    if start is None:
        return text
    body = lines[start:]
    for cut in range(len(body), 0, -1):
        candidate = "\n".join(body[:cut])
        if _defines(candidate, entry_point) and syntax_ok(candidate)[0]:
            return candidate + "\n"
    return text


def completion_code(completion: str, task: Task, variant: str) -> Program:
    """The completion's code in its shape (before the prompt and test are added)."""
    code, fenced = extract_completion(completion, task.entry_point)
    if not code.strip():
        return Program(None, "empty", fenced)
    if _defines(code, task.entry_point):
        if not fenced and not syntax_ok(code)[0]:
            code = unfenced_function(code, task.entry_point)
        return Program(trim_function(code, task.entry_point), "function", fenced)
    prefix = task.prompt + "\n" if variant == "normal" else ""
    return Program(fix_body(code, prefix), "body", fenced)


def build_program(completion: str, task: Task, variant: str) -> Program:
    """The whole program for the sandbox (code None for an empty completion)."""
    part = completion_code(completion, task, variant)
    if part.code is None:
        return part
    test = task.test if task.test.endswith("\n") else task.test + "\n"
    call = "" if _CHECK_CALL.search(task.test) else f"\ncheck({task.entry_point})\n"
    head = _head(part, task, variant)
    return Program(head.rstrip("\n") + "\n\n\n" + test + call, part.shape, part.from_fence)


# ------------------------------------------------------------------------------------------ the split judge
# The completion and the test in two processes (evaluation/humaneval/wire.py, docs/sandbox.md): G execs
# `SplitProgram.code` (prompt + completion, never the test); T execs `prelude` and `test` (dataset code only,
# never the completion) and calls the candidate across the boundary.

@dataclass(frozen=True)
class SplitProgram:
    code: str | None      # what G execs; None: nothing to run (empty completion)
    shape: str
    from_fence: bool
    prelude: str          # what T execs first: the dataset's prompt (normal) or the imports the test relies on (hard)
    test: str             # then the test
    calls_check: bool     # the test makes its own `check(<entry_point>)` call


def _head(part: Program, task: Task, variant: str) -> str:
    if part.shape == "body" and variant == "normal":
        return task.prompt + "\n" + (part.code or "")
    if variant == "normal":
        return task.prompt + "\n\n" + (part.code or "")
    return part.code or ""


def _top_level_imports(code: str) -> list[str]:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return []
    lines = code.split("\n")
    return ["\n".join(lines[n.lineno - 1:n.end_lineno]) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]


def test_prelude(task: Task, variant: str, normal_prompt: str | None = None) -> str:
    """The dataset code T runs before the test: the prompt (normal variant); in the hard variant, whose
    test runs after the solution upstream, the imports of the canonical solution and of the normal prompt
    (`normal_prompt`; looked up by task id when not given), which the tests use without importing them."""
    if variant == "normal":
        return task.prompt
    if normal_prompt is None:
        from evaluation.humaneval.tasks import tasks_by_id

        normal = tasks_by_id("normal").get(task.task_id)
        normal_prompt = normal.prompt if normal is not None else ""
    imports = _top_level_imports(task.canonical_solution) + _top_level_imports(normal_prompt)
    return "\n".join(dict.fromkeys(imports)) + "\n"


def split_program(completion: str, task: Task, variant: str, normal_prompt: str | None = None) -> SplitProgram:
    """The two programs of the split judge for one completion (code None for an empty completion)."""
    part = completion_code(completion, task, variant)
    code = None if part.code is None else _head(part, task, variant).rstrip("\n") + "\n"
    return SplitProgram(code, part.shape, part.from_fence, test_prelude(task, variant, normal_prompt),
                        task.test if task.test.endswith("\n") else task.test + "\n",
                        _CHECK_CALL.search(task.test) is not None)
