"""The pipes between the sandbox's processes: whole writes, capped line reads with a deadline, strict parsing.

Everything read here from G (the reply process) is written by a process the reply controls. Parsing is strict
(one JSON object per line, bounded size and nesting, ASCII-safe on the way out) and a parse failure is the
reply's own (`malformed`), never an exception that would make the judge fail.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import select
import time
from typing import Any

MAX_NESTING = 64  # a reply-written JSON line nested deeper than this is malformed (json would recurse)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def dumps_line(obj: Any) -> bytes:
    """One ASCII-only JSON line between the sandbox's own processes (no raw U+2028/U+0085 or lone surrogate
    can reach a reader). Files people and tools read are written strictly (evaluation.report)."""
    return (json.dumps(obj, ensure_ascii=True) + "\n").encode("ascii")


def read_line(fd: int, deadline: float, cap: int, pending: bytes = b"") -> tuple[bytes | None, str | None, bytes]:
    """One newline-terminated line from fd (after the bytes already `pending`) before `deadline`, at
    most `cap` bytes: (line or None, why not ("timeout", "too_large", "eof"), the bytes read past the line)."""
    buf = bytearray(pending)
    while b"\n" not in buf:
        if len(buf) > cap:
            return None, "too_large", b""
        left = deadline - time.monotonic()
        if left <= 0:
            return None, "timeout", b""
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return None, "eof", b""
        buf += chunk
    line, rest = bytes(buf).split(b"\n", 1)
    if len(line) > cap:
        return None, "too_large", b""
    return line + b"\n", None, rest


_STRING = re.compile(r'"(?:[^"\\]+|\\.)*"')
_DEPTH = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def _nesting(text: str) -> int:
    """The deepest bracket nesting outside strings (a cheap bound before json.loads recurses)."""
    brackets = [_DEPTH[ord(c)] for c in re.sub(r"[^\[\]{}]", "", _STRING.sub("", text))]
    return max(itertools.accumulate(brackets), default=0)


def parse_object(line: bytes | str) -> dict | None:
    """The JSON object on `line`, or None when it is not one (bad JSON, not a dict, nested too deep)."""
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
        if _nesting(text) > MAX_NESTING:
            return None
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def tail(fd: int, cap: int) -> str:
    """The last `cap` bytes of the file open on `fd`, decoded leniently."""
    try:
        size = os.fstat(fd).st_size
        os.lseek(fd, max(0, size - cap), os.SEEK_SET)
        return os.read(fd, cap).decode("utf-8", "replace")
    except OSError:
        return ""
