"""Why a reply failed: the failure vocabulary shared by the circuit judge and the HumanEval judge.

`failure` in results.jsonl is null when the reply passed, otherwise exactly one of FAILURES (the
HumanEval judge adds ASSERTION and EXCLUDED). JUDGE_ERROR is not a failure of the reply: the judge
could not decide, and such replies are left out of every rate (docs/evaluation.md).

Removed APIs (`removed_api`) are looked up in REMOVED_APIS, a table of what Qiskit (and the packages
around it) removed, each row citing the release notes or migration guide that records the removal.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from dataclasses import dataclass

FAILURES = ("no_code", "syntax_error", "removed_api", "missing_module", "needs_network", "runtime_error",
            "timeout", "resource_limit", "sandbox_denied", "no_circuit", "wrong_qubits", "too_deep",
            "no_parameters", "invalid_circuit", "too_complex")
ASSERTION, EXCLUDED = "assertion", "excluded"
JUDGE_ERROR = "judge_error"

_BY_EXCEPTION = {"SyntaxError": "syntax_error", "IndentationError": "syntax_error", "TabError": "syntax_error",
                 "ModuleNotFoundError": "missing_module", "ImportError": "missing_module",
                 "MemoryError": "resource_limit", "RecursionError": "resource_limit",
                 "PermissionError": "sandbox_denied"}

# ------------------------------------------------------------------------------------------ removed APIs

_QISKIT_1_0 = "https://quantum.cloud.ibm.com/docs/api/qiskit/release-notes/1.0"
_QISKIT_1_0_GUIDE = "https://quantum.cloud.ibm.com/docs/guides/qiskit-1.0-features"
_QISKIT_2_0 = "https://quantum.cloud.ibm.com/docs/api/qiskit/release-notes/2.0"
_RUNTIME_V2 = "https://quantum.cloud.ibm.com/docs/guides/v2-primitives"
_QISKIT_2_0_GUIDE = "https://quantum.cloud.ibm.com/docs/guides/qiskit-2.0"
_AQUA = "https://github.com/qiskit-community/qiskit-aqua"


@dataclass(frozen=True)
class RemovedApi:
    """One removed API. `name` is what results.jsonl reports (`removed_api_name`); `patterns` are the
    dotted names (fnmatch globs) that resolve to it; `removed_in` is the release that removed it."""
    name: str
    removed_in: str
    replacement: str
    source: str
    patterns: tuple[str, ...] = ()

    def matches(self, dotted: str) -> bool:
        return any(dotted == p or dotted.startswith(p + ".") or fnmatch.fnmatchcase(dotted, p)
                   for p in (self.name, *self.patterns))


REMOVED_APIS: tuple[RemovedApi, ...] = (
    # Qiskit 1.0.0 release notes, "Misc. Upgrade Notes" (execute, Aer, providers.aer, IBMQ, tools),
    # "Providers Upgrade Notes" (BasicAer, the V1 fake backends), "Circuits Upgrade Notes"
    # (bind_parameters, cnot/toffoli/fredkin/mct, extensions, Instruction.qasm).
    RemovedApi("qiskit.execute", "qiskit 1.0", "transpile() + backend.run(), or a V2 Sampler", _QISKIT_1_0),
    RemovedApi("qiskit.Aer", "qiskit 1.0", "qiskit_aer.AerSimulator (or qiskit_aer.Aer)", _QISKIT_1_0),
    RemovedApi("qiskit.providers.aer", "qiskit 1.0", "qiskit_aer", _QISKIT_1_0),
    RemovedApi("qiskit.BasicAer", "qiskit 1.0", "qiskit.providers.basic_provider.BasicSimulator", _QISKIT_1_0,
               ("qiskit.providers.basicaer",)),
    RemovedApi("qiskit.IBMQ", "qiskit 1.0", "qiskit_ibm_runtime.QiskitRuntimeService", _QISKIT_1_0,
               ("qiskit.providers.ibmq",)),
    RemovedApi("qiskit.tools", "qiskit 1.0", "qiskit.visualization / qiskit.utils.parallel_map", _QISKIT_1_0),
    RemovedApi("qiskit.test", "qiskit 1.0", "none (not public)", _QISKIT_1_0),
    RemovedApi("qiskit.extensions", "qiskit 1.0", "qiskit.circuit.library", _QISKIT_1_0),
    # The generic V1 fakes (Fake5QV1, ...) were added in 1.0 ("Add generic V1 Fake Backends") and went with
    # BackendV1 in 2.0; the device-specific ones (FakeManila, ...) moved to qiskit_ibm_runtime in 1.0.
    RemovedApi("qiskit.providers.fake_provider generic V1 fakes (Fake5QV1, ...)", "qiskit 2.0",
               "qiskit.providers.fake_provider.GenericBackendV2", _QISKIT_2_0,
               ("qiskit.providers.fake_provider.Fake5QV1", "qiskit.providers.fake_provider.Fake20QV1",
                "qiskit.providers.fake_provider.Fake1Q", "qiskit.providers.fake_provider.Fake*PulseV1",
                "qiskit.providers.fake_provider.FakeOpenPulse*")),
    RemovedApi("qiskit.providers.fake_provider.FakeBackend (V1 fake backends)", "qiskit 1.0",
               "qiskit_ibm_runtime.fake_provider (FakeManilaV2, ...)", _QISKIT_1_0,
               ("qiskit.providers.fake_provider.Fake*", "qiskit.test.mock")),
    RemovedApi("QuantumCircuit.bind_parameters", "qiskit 1.0", "QuantumCircuit.assign_parameters", _QISKIT_1_0,
               ("qiskit.QuantumCircuit.bind_parameters", "qiskit.circuit.QuantumCircuit.bind_parameters")),
    RemovedApi("QuantumCircuit.cnot", "qiskit 1.0", "QuantumCircuit.cx (toffoli->ccx, fredkin->cswap, mct->mcx)",
               _QISKIT_1_0, ("QuantumCircuit.toffoli", "QuantumCircuit.fredkin", "QuantumCircuit.mct")),
    RemovedApi("QuantumCircuit.qasm", "qiskit 1.0", "qiskit.qasm2.dumps", _QISKIT_1_0),
    # Removed in 1.0 with the rest of the 0.46 deprecations (the Qiskit 1.0 feature-changes guide; the
    # API reference documents them last for 0.46): opflow, qiskit.algorithms, QuantumInstance.
    RemovedApi("qiskit.opflow", "qiskit 1.0", "qiskit.quantum_info.SparsePauliOp + primitives", _QISKIT_1_0_GUIDE),
    RemovedApi("qiskit.algorithms", "qiskit 1.0", "qiskit_algorithms (pip install qiskit-algorithms)",
               _QISKIT_1_0_GUIDE),
    RemovedApi("qiskit.utils.QuantumInstance", "qiskit 1.0", "primitives (StatevectorEstimator, ...)",
               _QISKIT_1_0_GUIDE, ("qiskit.utils.quantum_instance",)),
    # Deprecated in 0.45/0.46 and removed in 1.0 (flake8-qiskit-migration's QKT100 rules list both).
    RemovedApi("qiskit.utils.algorithm_globals", "qiskit 1.0", "qiskit_algorithms.utils.algorithm_globals",
               _QISKIT_1_0_GUIDE),
    RemovedApi("qiskit.quantum_info.synthesis", "qiskit 1.0", "qiskit.synthesis", _QISKIT_1_0_GUIDE),
    RemovedApi("qiskit.qasm", "qiskit 1.0", "qiskit.qasm2 (load/dumps)", _QISKIT_1_0_GUIDE),
    RemovedApi("QuantumCircuit.snapshot", "qiskit 1.0", "qiskit_aer's save_* instructions", _QISKIT_1_0),
    # Never part of qiskit: qiskit-aqua was a separate package (qiskit.aqua, qiskit.chemistry, ...),
    # deprecated in April 2021 and archived; its code does not import with any current qiskit.
    RemovedApi("qiskit.aqua", "qiskit-aqua (a separate package, retired 2021)",
               "qiskit_algorithms / qiskit_nature / qiskit_optimization", _AQUA,
               ("qiskit.chemistry", "qiskit.finance", "qiskit.optimization", "qiskit.ml")),
    # Qiskit 2.0.0 release notes, "Primitives Upgrade Notes" and "Providers Upgrade Notes".
    RemovedApi("qiskit.primitives.Estimator", "qiskit 2.0", "qiskit.primitives.StatevectorEstimator", _QISKIT_2_0,
               ("qiskit.primitives.BaseEstimator",)),
    RemovedApi("qiskit.primitives.Sampler", "qiskit 2.0", "qiskit.primitives.StatevectorSampler", _QISKIT_2_0,
               ("qiskit.primitives.BaseSampler",)),
    RemovedApi("qiskit.primitives.BackendEstimator", "qiskit 2.0", "qiskit.primitives.BackendEstimatorV2",
               _QISKIT_2_0),
    RemovedApi("qiskit.primitives.BackendSampler", "qiskit 2.0", "qiskit.primitives.BackendSamplerV2", _QISKIT_2_0),
    RemovedApi("qiskit.providers.BackendV1", "qiskit 2.0", "qiskit.providers.BackendV2", _QISKIT_2_0,
               ("qiskit.providers.models", "qiskit.providers.BackendV2Converter", "qiskit.providers.ProviderV1",
                "qiskit.providers.Provider")),
    RemovedApi("qiskit.pulse", "qiskit 2.0", "none (Qiskit Dynamics for pulse-level work)", _QISKIT_2_0),
    # Qiskit 2.0: c_if (the commonest 2.0 break in feedback code: `qc.x(0).c_if(cr, 1)`), assemble and Qobj.
    RemovedApi("Instruction.c_if", "qiskit 2.0", "with qc.if_test((clbit, value)): ...", _QISKIT_2_0_GUIDE,
               ("*.c_if",)),
    RemovedApi("qiskit.assemble", "qiskit 2.0", "backend.run(circuits) / the V2 primitives", _QISKIT_2_0,
               ("qiskit.compiler.assemble", "qiskit.assembler", "qiskit.compiler.assembler")),
    RemovedApi("qiskit.qobj", "qiskit 2.0", "qiskit.qpy or OpenQASM", _QISKIT_2_0),
    # qiskit-ibm-runtime: the V1 primitives and their backend=/session= arguments. Deprecated in 0.23;
    # their support ended on 15 August 2024 (the V2 migration guide); the pinned 0.48 has
    # SamplerV2(mode=None, options=None) only.
    RemovedApi("qiskit_ibm_runtime.Sampler(backend=/session=)",
               "qiskit-ibm-runtime (V1 primitives, support removed 15 August 2024)",
               "SamplerV2(mode=backend_or_session)", _RUNTIME_V2),
    RemovedApi("qiskit_ibm_runtime.Estimator(backend=/session=)",
               "qiskit-ibm-runtime (V1 primitives, support removed 15 August 2024)",
               "EstimatorV2(mode=backend_or_session)", _RUNTIME_V2),
)


def lookup_removed(dotted: str) -> RemovedApi | None:
    """The table row a dotted name (`qiskit.execute`, `qiskit.opflow.PauliSumOp`, ...) belongs to."""
    for row in REMOVED_APIS:
        if row.matches(dotted):
            return row
    return None


_CANNOT_IMPORT = re.compile(r"cannot import name '([\w.]+)' from '([\w.]+)'")
_NO_MODULE = re.compile(r"No module named '([\w.]+)'")
_MODULE_ATTR = re.compile(r"module '([\w.]+)' has no attribute '(\w+)'")
_OBJECT_ATTR = re.compile(r"'(\w+)' object has no attribute '(\w+)'")
_UNEXPECTED_KW = re.compile(r"(SamplerV2|EstimatorV2)\.__init__\(\) got an unexpected keyword argument '(backend|session)'")


_ERROR_NAMES = ((_CANNOT_IMPORT, lambda m: (f"{m.group(2)}.{m.group(1)}", m.group(2))),
                (_NO_MODULE, lambda m: (m.group(1), m.group(1))),
                (_MODULE_ATTR, lambda m: (f"{m.group(1)}.{m.group(2)}", m.group(1))),
                (_OBJECT_ATTR, lambda m: (f"{m.group(1)}.{m.group(2)}", None)))


def _qiskit_release() -> str:
    """"qiskit X.Y" of the installed qiskit (the release a name is missing from), without importing it."""
    try:
        from importlib.metadata import version

        return "qiskit " + ".".join(version("qiskit").split(".")[:2])
    except Exception:  # noqa: BLE001  (no qiskit metadata: the error still names a qiskit module)
        return "qiskit"


def removed_api_in_error(error: str | None) -> RemovedApi | None:
    """The removed API an exception message ("ExcType: message") names, if any: a table row, else
    (issue 19) any `qiskit.X` the installed qiskit lacks, named from the error (`No module named
    'qiskit.X'`, `cannot import name 'Y' from 'qiskit.X'`, `module 'qiskit.X' has no attribute 'Y'`):
    qiskit itself imports, so a missing piece of it is an API the model learnt from another release
    (or invented: the judge cannot tell a removed name from one that never existed). Such a name gets
    removed_in "not in qiskit X.Y" and no table row."""
    if not error:
        return None
    unlisted = None
    for pattern, names in _ERROR_NAMES:
        m = pattern.search(error)
        if m:
            dotted, module = names(m)
            row = lookup_removed(dotted)
            if row is not None:
                return row
            qiskit_part = module is not None and (module.startswith("qiskit.") or
                                                  (module == "qiskit" and pattern is not _NO_MODULE))
            if unlisted is None and qiskit_part:
                unlisted = dotted
    m = _UNEXPECTED_KW.search(error)
    if m:
        return lookup_removed(f"qiskit_ibm_runtime.{m.group(1)[:-2]}(backend=/session=)")
    if unlisted is not None:
        return RemovedApi(unlisted, f"not in {_qiskit_release()}", "see the Qiskit migration guides",
                          _QISKIT_1_0_GUIDE)
    return None


_IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    """`except:`, `except ImportError:`, `except (ModuleNotFoundError, X):`, `except Exception:` ..."""
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(t, (ast.Name, ast.Attribute)) and (t.id if isinstance(t, ast.Name) else t.attr)
               in _IMPORT_ERRORS for t in types)


def _guarded_imports(tree: ast.AST) -> set[int]:
    """id() of the import statements in the body of a `try` whose handler catches ImportError: a
    compatibility import (`try: from qiskit import Aer` / `except ImportError: from qiskit_aer import Aer`)
    that falls back on the installed stack, so the removed name is never used."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers):
            for st in node.body:
                if isinstance(st, (ast.Import, ast.ImportFrom)):
                    out.add(id(st))
    return out


def _imported_names(code: str) -> list[str]:
    """Dotted names the code imports (`from a.b import c` -> a.b.c; `import a.b` -> a.b), in order; an
    import guarded by try/except ImportError (_guarded_imports) does not count."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    guarded = _guarded_imports(tree)
    names: list[str] = []
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
            names.extend(f"{node.module}.{a.name}" for a in node.names if a.name != "*")
        elif isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
    return names


_REMOVED_CALLS = (("qiskit.execute", re.compile(r"\bqiskit\.execute\(")),
                  ("QuantumCircuit.bind_parameters", re.compile(r"\.bind_parameters\(")),
                  ("QuantumCircuit.cnot", re.compile(r"\.(cnot|toffoli|fredkin|mct)\(")),
                  ("Instruction.c_if", re.compile(r"\.c_if\(")),
                  ("QuantumCircuit.snapshot", re.compile(r"\.snapshot\(")))


def removed_apis_in_code(code: str | None) -> list[str]:
    """Names (REMOVED_APIS rows) of the removed APIs the code imports or calls, in first-use order.
    Imports are read with `ast` (comments and strings do not count; a guarded compatibility import does
    not count either); five removed methods by pattern."""
    if not code:
        return []
    found: list[str] = []
    for dotted in _imported_names(code):
        row = lookup_removed(dotted)
        if row is not None and row.name not in found:
            found.append(row.name)
    for name, pattern in _REMOVED_CALLS:
        if pattern.search(code) and name not in found:
            found.append(name)
    return found


# ------------------------------------------------------------------------------------------ network

_NETWORK_EXCEPTIONS = {"AccountNotFoundError", "InvalidAccountError", "IBMNotAuthorizedError", "IBMAccountError",
                       "RequestsApiError", "IBMRuntimeError", "ConnectionError", "ConnectionRefusedError",
                       "ConnectionResetError", "ConnectionAbortedError", "gaierror", "herror", "URLError",
                       "MaxRetryError", "NewConnectionError", "NameResolutionError", "ConnectTimeout",
                       "ConnectTimeoutError", "SSLError", "ProxyError", "HTTPError"}
_NETWORK_TEXT = re.compile(r"Network is unreachable|No route to host|Name or service not known|"
                           r"Temporary failure in name resolution|nodename nor servname|Connection refused|"
                           r"Failed to establish a new connection|Max retries exceeded|"
                           r"'channel' can only be|Errno (101|111|113|-2|-3)\]")
# Packages whose only purpose is talking to IBM's cloud (not installed: their import fails first).
_SERVICE_MODULES = ("qiskit_ibm_provider", "qiskit_ibm_experiment", "qiskit_ibmq_provider")
_NETWORK_CODE = re.compile(r"^\s*(import|from)\s+(socket|requests|urllib|http\.client|httpx|aiohttp)\b|"
                           r"QiskitRuntimeService\s*\(|IBMProvider\s*\(", re.MULTILINE)
_PATHLESS_EACCES = re.compile(r"^PermissionError: \[Errno 13\] Permission denied\s*$")
# An account asked for on stdin: `token = input("Enter your IBM Quantum API token: ")` then save_account /
# QiskitRuntimeService(...). The sandbox's stdin is empty (EOFError); no answer typed would make it run.
_ASKS_INPUT = re.compile(r"\b(input|getpass(\.getpass)?)\s*\(")
_ACCOUNT_CODE = re.compile(r"\bsave_account\s*\(|QiskitRuntimeService\s*\(|IBMProvider\s*\(|\bIBMQ\.")


def needs_network(error: str | None, code: str | None = None) -> bool:
    """The reply failed because it needs an account or the network (the sandbox has neither)."""
    if not error:
        return False
    exc_type = error.split(":", 1)[0].strip().rsplit(".", 1)[-1]
    if exc_type in _NETWORK_EXCEPTIONS or _NETWORK_TEXT.search(error):
        return True
    m = _NO_MODULE.search(error)
    if m and m.group(1).split(".")[0] in _SERVICE_MODULES:
        return True
    if exc_type == "EOFError" and code and _ASKS_INPUT.search(code) and _ACCOUNT_CODE.search(code):
        return True
    # Landlock refuses a TCP connect with a bare EACCES (no file name, unlike a denied file write).
    return bool(_PATHLESS_EACCES.match(error.strip()) and code and _NETWORK_CODE.search(code))


# ------------------------------------------------------------------------------------------ classification

def classify_exec_error(error: str | None, code: str | None = None) -> str | None:
    """The failure kind of an exception the reply's own code raised, given as "ExcType: message"
    (the sandbox's exec_error); None for no error. With the reply's `code`, an ImportError whose message
    names a removed API the code imports is removed_api, a bare permission error with sockets in the code
    is needs_network, and so is an EOFError from input() in code that logs into IBM's cloud."""
    if not error:
        return None
    if removed_api_in_error(error) is not None:
        return "removed_api"
    if needs_network(error, code):
        return "needs_network"
    exc_type = error.split(":", 1)[0].strip().rsplit(".", 1)[-1]
    if exc_type in ("ImportError", "ModuleNotFoundError") and _names_removed_import(error, code):
        return "removed_api"
    return _BY_EXCEPTION.get(exc_type, "runtime_error")


def _names_removed_import(error: str, code: str | None) -> bool:
    """The ImportError's message names (last component or module) a removed API the code imports
    unguarded, e.g. "cannot import name 'PauliSumOp'" for `from qiskit.opflow import PauliSumOp`; an
    ImportError about something else is not blamed on a removed import elsewhere in the code."""
    if not code:
        return False
    message = error.split(":", 1)[-1]
    for dotted in _imported_names(code):
        if lookup_removed(dotted) is None:
            continue
        parts = dotted.split(".")
        if any(re.search(rf"\b{re.escape(x)}\b", message) for x in (parts[-1], dotted) if x != "qiskit"):
            return True
    return False


@dataclass(frozen=True)
class RemovedUse:
    name: str
    removed_in: str


def removed_api_of(error: str | None, code: str | None = None) -> RemovedUse | None:
    """For a `removed_api` failure: which API and the release that removed it (error text first,
    then the first removed import of the code)."""
    row = removed_api_in_error(error)
    if row is None and code:
        names = removed_apis_in_code(code)
        row = next((r for r in REMOVED_APIS if names and r.name == names[0]), None)
    return RemovedUse(row.name, row.removed_in) if row else None


# ------------------------------------------------------------------------------------------ one result

_RESULT_DEFAULTS = {"failure": None, "removed_api_name": None, "removed_in": None, "removed_apis": [],
                    "fallback": None, "whole_answer_error": None}
_KNOWN = set(FAILURES) | {JUDGE_ERROR, ASSERTION, EXCLUDED}


def verification_failure(result: dict, expected_qubits: int, max_depth: int) -> str:
    """The verification-level kind of a circuit that was found but failed, when the judge gave none
    (qubit count, depth, free parameters); invalid_circuit when none of them explains it. The judge's
    own `failure` (verify.VERIFICATION_FAILURES order) takes precedence in failure_of."""
    if result.get("num_qubits_found") != expected_qubits:
        return "wrong_qubits"
    if isinstance(result.get("depth"), int) and result["depth"] > max_depth:
        return "too_deep"
    if result.get("num_parameters") is not None and result["num_parameters"] < 1:
        return "no_parameters"
    return "invalid_circuit"


def failure_of(result: dict, expected_qubits: int, max_depth: int) -> str | None:
    """`failure` for one scored result: null when verification passed; the judge's own kind when it
    gave one; otherwise derived from what the result says (no code, syntax, the found circuit, the error)."""
    if result.get("verification_pass"):
        return None
    if result.get("request_error"):  # the endpoint refused: nothing was scored, so nothing failed
        return None
    if result.get("failure") in _KNOWN:
        return result["failure"]
    if result.get("code") is None or (result.get("code_rule") == "reply" and not result.get("syntax_valid")):
        return "no_code"  # nothing that looks like code: the seed's last resort (the whole reply) did not compile
    if not result.get("syntax_valid"):
        return "syntax_error"
    if result.get("num_qubits_found") is not None:
        return verification_failure(result, expected_qubits, max_depth)
    if result.get("error") and result.get("error") != "no QuantumCircuit found":
        return classify_exec_error(result["error"], result.get("code"))
    return "no_circuit"


def finish_failure(result: dict, fallbacks: list[str], *, expected_qubits: int, max_depth: int) -> None:
    """Completes one scored result in place: `failure`, `removed_api_name`/`removed_in` (for removed_api),
    `removed_apis` (every removed API the whole answer uses: its imports and the errors it raised),
    and `code`/`code_rule` when a single fence (fallback) was judged instead of the whole answer."""
    for key, value in _RESULT_DEFAULTS.items():
        result.setdefault(key, list(value) if isinstance(value, list) else value)
    whole = result.get("code")
    used = removed_apis_in_code(whole)
    for error in (result.get("whole_answer_error"), result.get("error")):
        row = removed_api_in_error(error)
        if row is not None and row.name not in used:
            used.append(row.name)
    fb = result.get("fallback")
    if isinstance(fb, int) and not isinstance(fb, bool) and 0 <= fb < len(fallbacks):
        result["code"] = fallbacks[fb]
        result["code_rule"] = f"fence alone (fallback {fb + 1}; the whole answer failed)"
    result["failure"] = failure_of(result, expected_qubits, max_depth)
    if result["failure"] == "removed_api":
        if not result.get("removed_api_name"):
            use = removed_api_of(result.get("error"), whole)
            if use is not None:
                result.update(removed_api_name=use.name, removed_in=use.removed_in)
        if result.get("removed_api_name") and result["removed_api_name"] not in used:
            used.append(result["removed_api_name"])
    else:
        result.update(removed_api_name=None, removed_in=None)
    result["removed_apis"] = used
