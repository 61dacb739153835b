"""The HumanEval judge's wire: the test runs in a process the completion does not control (docs/sandbox.md).

Two processes, one call at a time over JSON lines (ASCII, one object per line, size-capped):

* G (hostile: the sandbox's reply process) execs only the task's prompt and the completion (no test code:
  `exec_candidate`), then `serve_calls`: reads a call request, calls the candidate with the decoded
  arguments, answers with the encoded return value (or the exception the candidate raised: its type names
  and message), and repeats until EOF.
* T (trusted: the test harness, in the judge process) execs the task's dataset prelude (the prompt's imports
  and stub) and the task's test, binds `candidate` and the global name of the entry point to a proxy that
  forwards every call to G, and runs `check(proxy)`: `judge_calls`. The verdict is T's alone.

Values cross as data only (evaluation/humaneval/codec.py: genuine objects of an allow-list of types).
"""

from __future__ import annotations

import builtins
import io
import logging
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

from evaluation.failures import JUDGE_ERROR, classify_exec_error
from evaluation.humaneval.codec import (_HANDLES, _SESSION, MAX_LINE, WireError, _array, _b64, _float, _int, _list,
                                        _str, _unarray, _unb64, _unfloat, decode, decode_exception, dumps, encode,
                                        exception_record, loads)

log = logging.getLogger(__name__)

MAX_FILE = 1024 * 1024       # bytes per file the candidate wrote that crosses back (task 82: bell.qpy)
MAX_FILES = 16               # files per answer

# ------------------------------------------------------------------------------------------ G side

def exec_candidate(code: str) -> tuple[dict, str | None]:
    """In G: exec the candidate program (prompt + completion) -> (namespace, "Type: message" or None)."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    try:
        exec(compile(code, "reply.py", "exec", dont_inherit=True), namespace)
    except BaseException as exc:  # noqa: BLE001 - the completion's own failure, reported on every call
        return namespace, f"{type(exc).__name__}: {exc}"[:300]
    return namespace, None


def serve_calls(namespace: dict, job: dict, rfile: BinaryIO, wfile: BinaryIO, exec_error: str | None = None) -> None:
    """In G: answer call requests until EOF. Request: {"id", "args": [...], "kwargs": [[name, value]...]}.
    Response: {"id", "ok": value, "after": [[arg index or name, value]...]} (arguments the call changed),
    {"id", "raise": exception record}, or {"id", "fatal": "Type: message"} (the program did not run, the
    candidate is missing or not callable, it exited, or its value cannot be sent)."""
    entry = str(job["entry_point"])
    handles: dict[int, Any] = {}
    _HANDLES.set(handles)
    while True:
        line = rfile.readline(MAX_LINE + 1)
        if not line:
            return
        try:
            req = loads(line)
            rid = _int(req.get("id"))
            args = [decode(a) for a in _list(req.get("args"))]
            kwargs = {_str(k): decode(v) for k, v in (_list(p) for p in _list(req.get("kwargs")))}
            _set_rng(req.get("rng"))
        except WireError as exc:
            wfile.write(dumps({"id": None, "fatal": f"WireError: {exc}"[:300]}))
            wfile.flush()
            return
        before = _listing()
        resp = _answer(_target_of(namespace, entry, handles, req), exec_error, rid, req, args, kwargs)
        if "fatal" not in resp:
            resp["files"] = _written(before)
        out = dumps(resp)
        if len(out) > MAX_LINE:
            out = dumps({"id": rid, "fatal": f"MemoryError: the answer is larger than {MAX_LINE} bytes ({len(out)})"})
        wfile.write(out)
        wfile.flush()


def _target_of(namespace: dict, entry: str, handles: dict, req: dict) -> Callable | str:
    """What a request calls: the candidate, or a method of a handle (the error text when there is none)."""
    if "handle" not in req:
        fn = namespace.get(entry)
        return fn if callable(fn) else f"NameError: name '{entry}' is not defined"
    obj = handles.get(req.get("handle"))
    if obj is None:
        return "WireError: no such handle"
    if req.get("method") == "new" and isinstance(obj, type):
        return obj
    if req.get("method") == "run" and not isinstance(obj, type):
        return obj.run
    return "WireError: no such method"


def _answer(fn: Callable | str, exec_error: str | None, rid: int, req: dict, args: list, kwargs: dict) -> dict:
    if exec_error is not None:
        return {"id": rid, "fatal": exec_error}
    if isinstance(fn, str):
        return {"id": rid, "fatal": fn}
    try:
        out = fn(*args, **kwargs)
    except (SystemExit, KeyboardInterrupt, GeneratorExit) as exc:
        return {"id": rid, "fatal": f"{type(exc).__name__}: {exc}"[:300]}
    except BaseException as exc:  # noqa: BLE001 - the candidate's exception: it crosses as data
        record: dict = {"id": rid, "raise": exception_record(exc)}
    else:
        record = {"id": rid, "ok": out}
    try:
        if "ok" in record:
            record["ok"] = encode(record["ok"])
        record["after"] = _changed(req, args, kwargs)
        return record
    except (WireError, RecursionError) as exc:
        return {"id": rid, "fatal": f"WireError: the return value cannot be sent: {exc}"[:300]}
    except Exception as exc:  # noqa: BLE001 - a hostile object broke its own encoding
        return {"id": rid, "fatal": f"WireError: the return value cannot be sent: {type(exc).__name__}: {exc}"[:300]}


def _rng_state() -> dict:
    """In T: the test's random state (numpy's global generator, the random module), sent with each call so
    that a test that seeds before calling gets the candidate it seeded (task 63). One way only: G's state
    never flows back, so the candidate cannot choose the test's next random inputs."""
    import random

    import numpy as np

    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"numpy": [name, _array(keys), int(pos), int(has_gauss), _float(gauss)],
            "random": [version, list(internal), None if gauss_next is None else _float(gauss_next)]}


def _set_rng(state: Any) -> None:
    """In G: take T's random state (malformed: ignored, it is T's own data)."""
    if not isinstance(state, dict):
        return
    import random

    import numpy as np

    try:
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, _unarray(keys), pos, has_gauss, _unfloat(gauss)))
        version, internal, gauss_next = state["random"]
        random.setstate((version, tuple(internal), None if gauss_next is None else _unfloat(gauss_next)))
    except (KeyError, TypeError, ValueError):
        log.debug("random state not applied", exc_info=True)


def _listing() -> dict[str, tuple[int, int]]:
    """In G: the regular files of the working directory (name -> size, mtime)."""
    import os

    out = {}
    try:
        with os.scandir(".") as it:
            for e in it:
                if e.is_file(follow_symlinks=False):
                    st = e.stat(follow_symlinks=False)
                    out[e.name] = (st.st_size, st.st_mtime_ns)
    except OSError:
        pass
    return out


def _written(before: dict[str, tuple[int, int]]) -> list:
    """In G: [[name, base64]] of files in the working directory the call created or changed (capped)."""
    out = []
    for name, meta in sorted(_listing().items()):
        if before.get(name) == meta or meta[0] > MAX_FILE or len(out) >= MAX_FILES:
            continue
        try:
            with open(name, "rb") as fh:
                out.append([name, _b64(fh.read(MAX_FILE + 1)[:MAX_FILE])])
        except OSError:
            continue
    return out


class CandidateFiles:
    """In T: the files the candidate wrote in its working directory, readable by the test through the
    `open` of its namespace (read modes only; any other path goes to the real `open`, which the judge
    process confines)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def update(self, entries: Any) -> None:
        for entry in _list(entries or [])[:MAX_FILES]:
            name, data = _list(entry)
            name = _str(name)
            if "/" in name or name in (".", "..") or "\x00" in name:
                raise WireError(f"bad file name {name[:40]!r}")
            blob = _unb64(data)
            if len(blob) > MAX_FILE:
                raise WireError("file too large")
            self.files[name] = blob

    def open(self, file, mode="r", *args, **kwargs):
        key = file[2:] if isinstance(file, str) and file.startswith("./") else file
        if isinstance(key, str) and key in self.files:
            if any(c in mode for c in "wax+"):
                raise PermissionError(f"the judge does not write {file!r}")
            if "b" in mode:
                return io.BytesIO(self.files[key])
            return io.TextIOWrapper(io.BytesIO(self.files[key]), encoding=kwargs.get("encoding") or "utf-8",
                                    newline=kwargs.get("newline"))
        return builtins.open(file, mode, *args, **kwargs)


_MUTABLE_TAGS = {"circuit", "list", "dict", "set", "ndarray"}


def _changed(req: dict, args: list, kwargs: dict) -> list:
    """The arguments (mutable kinds) whose encoding differs after the call: [[index or name, value]...]."""
    out = []
    sent = list(enumerate(req.get("args", []))) + [(k, v) for k, v in req.get("kwargs", [])]
    now = {**dict(enumerate(args)), **kwargs}
    for key, before in sent:
        if before.get("t") in _MUTABLE_TAGS:
            after = encode(now[key])
            if after != before:
                out.append([key, after])
    return out


# ------------------------------------------------------------------------------------------ T side

class _Abort(BaseException):
    """Unwinds the test once the call channel failed (a BaseException: the test's `except Exception` cannot
    swallow it; one that does swallow it still fails: the session remembers)."""


@dataclass
class _Session:
    call: Callable[[bytes], bytes | None]
    deadline: float
    entry_point: str
    failure: tuple[str, str] | None = None
    calls: int = 0
    files: CandidateFiles | None = None

    def fail(self, failure: str, error: str) -> None:
        if self.failure is None:
            self.failure = (failure, error[:300])
        raise _Abort()

    def candidate(self, *args, **kwargs):
        return self.request({}, args, kwargs)

    def request(self, head: dict, args: tuple, kwargs: dict):
        """One call in G (the candidate, or a handle's method: `head`) -> its decoded value."""
        if self.failure is not None:
            raise _Abort()
        self.calls += 1
        try:
            req = {**head, "id": self.calls, "args": [encode(a) for a in args],
                   "kwargs": [[str(k), encode(v)] for k, v in kwargs.items()], "rng": _rng_state()}
            line = dumps(req)
        except (WireError, ValueError) as exc:  # the test's own argument: the judge cannot carry it
            self.fail(JUDGE_ERROR, f"argument cannot be sent to the candidate: {exc}")
        if len(line) > MAX_LINE:
            self.fail(JUDGE_ERROR, "argument larger than the wire's line limit")
        if time.monotonic() >= self.deadline:
            self.fail("timeout", "the time limit passed before the candidate returned")
        raw = self.call(line)
        if raw is None:
            if time.monotonic() >= self.deadline:
                self.fail("timeout", "the time limit passed before the candidate returned")
            self.fail("runtime_error", "the completion's process ended without answering")
        try:
            resp = loads(raw)
            if resp.get("id") != self.calls:
                raise WireError(f"answer for call {resp.get('id')!r}, expected {self.calls}")
            if "fatal" in resp:
                fatal = _str(resp["fatal"])[:300]
                self.fail(_classify(fatal), fatal)
            for key, value in _list(resp.get("after", [])):
                _apply_after(args, kwargs, key, decode(value))
            if self.files is not None:
                self.files.update(resp.get("files"))
            if "raise" in resp:
                exc = decode_exception(resp["raise"])
            else:
                token = _SESSION.set(self)
                try:
                    return decode(resp["ok"])
                finally:
                    _SESSION.reset(token)
        except (WireError, KeyError) as exc:
            self.fail("runtime_error", f"invalid answer from the completion's process: {exc}")
        raise exc


def _apply_after(args: tuple, kwargs: dict, key: Any, new: Any) -> None:
    """Write the candidate's change of a mutable argument back into the test's own object (in place)."""
    import numpy as np
    from qiskit import QuantumCircuit

    if isinstance(key, int) and 0 <= key < len(args):
        old = args[key]
    elif isinstance(key, str) and key in kwargs:
        old = kwargs[key]
    else:
        raise WireError(f"no argument {key!r} to update")
    if type(old) is list and type(new) is list:
        old[:] = new
    elif type(old) is dict and type(new) is dict:
        old.clear()
        old.update(new)
    elif type(old) is set and type(new) is set:
        old.clear()
        old.update(new)
    elif isinstance(old, np.ndarray) and isinstance(new, np.ndarray) and old.shape == new.shape:
        np.copyto(old, new, casting="unsafe")
    elif type(old) is QuantumCircuit and type(new) is QuantumCircuit:
        old.__dict__.clear()
        old.__dict__.update(new.__dict__)   # a genuine circuit's state (decoded from QPY)
    else:
        raise WireError(f"argument {key!r} changed into a {type(new).__name__}")


def _classify(error: str) -> str:
    exc_type = error.split(":", 1)[0].strip()
    if exc_type == "WireError":
        return "runtime_error"
    if exc_type in ("SystemExit", "KeyboardInterrupt", "GeneratorExit", "NameError"):
        return "runtime_error"
    return classify_exec_error(error)


def judge_calls(job: dict, ready: dict | None, call: Callable[[bytes], bytes | None], deadline: float) -> dict:
    """In T: run the task's test against a proxy of G's candidate -> {"passed", "failure", "error"}.

    job: "prelude" (the dataset code the test needs: the prompt, or the hard variant's imports), "test",
    "entry_point", "calls_check" (the test makes its own `check(entry_point)` call). `ready`: G's own record
    after it ran the program ({"exec_error", "exit"}; None when there is none): untrusted, so it can only
    fail the sample (the program raised or exited: the failure as the one-process judge names it), never
    pass it. `call(request)` sends one request line to G and returns its one response line (None: G is gone,
    or `deadline`, a time.monotonic() value, passed). Every call's outcome is checked here; nothing G says
    about the run is taken as a verdict."""
    from evaluation.humaneval.judge import verdict

    if isinstance(ready, dict) and (ready.get("exec_error") is not None or ready.get("exit") is not None):
        exit_code = ready.get("exit")
        return {**verdict(str(ready.get("exec_error") or "")[:300] or None,
                          None if exit_code is None else str(exit_code)[:200]), "passed": False}
    entry = str(job["entry_point"])
    session = _Session(call=call, deadline=deadline, entry_point=entry, files=CandidateFiles())

    def candidate(*args, **kwargs):
        return session.candidate(*args, **kwargs)

    candidate.__name__ = candidate.__qualname__ = entry
    ns: dict[str, Any] = {"__name__": "__main__", "open": session.files.open}
    error: str | None = None
    exit_code: str | None = None
    try:
        exec(compile(job.get("prelude") or "", "prompt.py", "exec", dont_inherit=True), ns)
        ns[entry] = candidate
        exec(compile(job["test"], "test.py", "exec", dont_inherit=True), ns)
        if not job.get("calls_check"):
            ns["check"](candidate)
    except _Abort:
        pass
    except SystemExit as exc:
        exit_code = str(exc.code)[:200]
    except BaseException as exc:  # noqa: BLE001 - the test failed (or the candidate's exception escaped)
        error = f"{type(exc).__name__}: {exc}"[:300]
    if session.failure is not None:
        failure, err = session.failure
        return {"passed": False, "failure": failure, "error": err}
    return verdict(error, exit_code)
