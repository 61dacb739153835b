"""Verifiable rewards for GRPO: the sandboxed judges, in TRL's reward signature (docs/configs.md, "GRPO").

    trl:
      reward_funcs: [quantummind.rewards.circuit_reward]

TRL calls `fn(prompts=..., completions=..., completion_ids=..., **columns)`, the dataset's extra columns
arriving as lists aligned with the completions (a completion is a string or a list of chat messages).
A reward is a float, or None when the judge could not decide (TRL leaves it out of the group's
statistics: a judge fault is not the model's, so it is never 0).

circuit_reward: the circuit judge's verdict (evaluation.scoring.score_replies, exactly what
`evaluation score` runs, every hostile-reply defence included) graded by CIRCUIT_WEIGHTS:

    no code / syntax error                            0.00
    code that fails to run (exception, timeout, ...)  0.05
    code that runs, but builds no circuit             0.15
    a circuit of another size than asked              0.25
    a circuit with the asked qubit count, unverified  0.35
    verified                                          0.60
    + barren-plateau free (decided by the BP rule)    0.30
    + constraint not violated                         0.10   (only on a verified reply)

Every verified reply (>= 0.60) scores above every unverified one (<= 0.35).

unit_test_reward: the fraction of a task's asserts that pass (rows with `prompt`, `test`, `entry_point` as
in HumanEval), each assert run as its own program through the HumanEval judge kind. Rows that share a
13-gram with a Qiskit HumanEval prompt or canonical solution are refused: the benchmark is never a
training set.

One kept-alive fork server per judge kind and training process (evaluation.sandbox.Session),
started on the first call, shut down at exit, restarted with a logged warning if it died. Its workers:
QM_REWARD_WORKERS, else the CPU count.
"""

from __future__ import annotations

import ast
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

from evaluation.failures import JUDGE_ERROR
from evaluation.sandbox import Session

log = logging.getLogger(__name__)

WORKERS_ENV = "QM_REWARD_WORKERS"


@dataclass(frozen=True)
class CircuitWeights:
    """The graded circuit reward; the one place its numbers live."""
    crashed: float = 0.05
    runs: float = 0.15
    circuit: float = 0.25  # a circuit, but not of the asked qubit count
    qubits: float = 0.35
    verified: float = 0.60
    bp_free: float = 0.30
    constraint: float = 0.10


CIRCUIT_WEIGHTS = CircuitWeights()
NO_CODE_FAILURES = ("no_code", "syntax_error")
CRASH_FAILURES = ("removed_api", "missing_module", "needs_network", "runtime_error", "timeout", "resource_limit",
                  "sandbox_denied")

_sessions: dict[str, Session] = {}


def reward_workers() -> int:
    raw = os.environ.get(WORKERS_ENV)
    if raw:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{WORKERS_ENV}={raw!r}: expected a positive integer") from None
        if value < 1:
            raise ValueError(f"{WORKERS_ENV}={raw!r}: expected a positive integer")
        return value
    return os.cpu_count() or 1


def session_for(kind: str) -> Session:
    """The process's kept-alive fork server for `kind` ("circuit" or "humaneval"), created on first use."""
    if kind not in _sessions:
        if kind == "circuit":
            from evaluation.scoring import circuit_cfg

            cfg = circuit_cfg(workers=reward_workers())
        elif kind == "humaneval":
            from evaluation.humaneval.scoring import humaneval_cfg

            cfg = humaneval_cfg(workers=reward_workers())
        else:
            raise ValueError(f"unknown judge kind {kind!r}")
        _sessions[kind] = Session(cfg)
    return _sessions[kind]


def close_sessions() -> None:
    for session in _sessions.values():
        session.close()
    _sessions.clear()


def completion_text(completion: Any) -> str:
    """A completion as TRL hands it: a string, or chat messages (the assistant turns' text joined)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        parts = []
        for msg in completion:
            if isinstance(msg, dict) and msg.get("role", "assistant") == "assistant":
                content = msg.get("content")
                if isinstance(content, list):  # content blocks
                    content = "".join(b.get("text", "") for b in content if isinstance(b, dict))
                parts.append(str(content or ""))
        return "\n".join(parts)
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    raise TypeError(f"completion must be a string or chat messages, got {type(completion).__name__}")


def _column(kwargs: dict[str, Any], name: str, n: int) -> list[Any]:
    values = kwargs.get(name)
    if values is None:
        raise ValueError(f"reward needs the dataset column {name!r} (prepare_dataset.py --rl writes it)")
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
    return list(values)


# ------------------------------------------------------------------------------------------ circuit


def grade_circuit(result: dict, weights: CircuitWeights = CIRCUIT_WEIGHTS) -> float | None:
    """The reward of one scored reply (a score_replies result); None when the judge could not decide."""
    if result.get("judge_error") or result.get("failure") == JUDGE_ERROR or result.get("request_error"):
        return None
    if result.get("verification_pass") is True:
        value = weights.verified
        if result.get("bp_free") is True:
            value += weights.bp_free
        if result.get("constraint_satisfied") is not False:
            value += weights.constraint
        return round(value, 6)
    failure = result.get("failure")
    if not result.get("syntax_valid") or failure in NO_CODE_FAILURES:
        return 0.0
    if failure in CRASH_FAILURES:
        return weights.crashed
    found = result.get("num_qubits_found")
    if found is None:
        return weights.runs
    return weights.qubits if found == result.get("num_qubits") else weights.circuit


def _log_components(results: list[dict], rewards: list[float | None], log_metric: Callable | None) -> None:
    if log_metric is None:
        return
    decided = [r for r, v in zip(results, rewards) if v is not None]
    n = len(decided) or 1
    log_metric("circuit/verified", sum(bool(r.get("verification_pass")) for r in decided) / n)
    log_metric("circuit/bp_free", sum(r.get("bp_free") is True for r in decided) / n)
    log_metric("circuit/syntax_valid", sum(bool(r.get("syntax_valid")) for r in decided) / n)
    log_metric("circuit/constraint_violated", sum(r.get("constraint_satisfied") is False for r in decided) / n)
    log_metric("circuit/judge_error", (len(results) - len(decided)) / (len(results) or 1))


def score_completions(completions: list[Any], hamiltonian: list[str], num_qubits: list[int],
                      constraint: list[str] | None = None, session: Session | None = None) -> list[dict]:
    """score_replies results for the completions, through the kept-alive circuit session."""
    from evaluation.scoring import score_replies

    records = [{"id": str(i), "hamiltonian": h, "num_qubits": int(n), "constraint": c or "",
                "reply": completion_text(comp)}
               for i, (comp, h, n, c) in enumerate(zip(completions, hamiltonian, num_qubits,
                                                       constraint or [""] * len(completions), strict=True))]
    session = session or session_for("circuit")
    return score_replies(records, workers=session.cfg["workers"], session=session)


def circuit_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
    """The circuit judge's graded verdict per completion (module docstring); columns `hamiltonian`,
    `num_qubits` and optionally `constraint` come from the dataset."""
    n = len(completions)
    results = score_completions(completions, _column(kwargs, "hamiltonian", n), _column(kwargs, "num_qubits", n),
                                list(kwargs["constraint"]) if kwargs.get("constraint") is not None else None,
                                session=kwargs.get("session"))
    rewards = [grade_circuit(r) for r in results]
    _log_components(results, rewards, kwargs.get("log_metric"))
    return rewards


# ------------------------------------------------------------------------------------------ unit tests


class ContaminatedRow(ValueError):
    """A training row overlaps Qiskit HumanEval: refused."""


def split_asserts(test: str) -> list[str]:
    """One test program per top-level assert of `check`'s body (the other asserts removed; the body's
    other statements kept), each ending with the check call when the test does not make it. A test
    without such asserts is one program."""
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return [test]
    check = next((node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "check"), None)
    asserts = [i for i, node in enumerate(check.body) if isinstance(node, ast.Assert)] if check else []
    if len(asserts) < 2:
        return [test]
    programs = []
    for keep in asserts:
        body = [node for i, node in enumerate(check.body) if i == keep or i not in asserts]
        new_check = ast.FunctionDef(name=check.name, args=check.args, body=body, decorator_list=check.decorator_list,
                                    returns=check.returns, type_comment=None, type_params=[])
        module = ast.Module(body=[new_check if node is check else node for node in tree.body], type_ignores=[])
        programs.append(ast.unparse(ast.fix_missing_locations(module)) + "\n")
    return programs


def refuse_contaminated(text: str, entry_point: str) -> None:
    """Raise ContaminatedRow when `text` (a row's prompt and test) shares a 13-gram with Qiskit HumanEval."""
    from evaluation.humaneval.decontam import NGRAM, humaneval_overlap

    overlap = humaneval_overlap([text])
    if overlap.texts_with_overlap:
        raise ContaminatedRow(f"unit_test_reward: a row for {entry_point!r} shares a {NGRAM}-gram with Qiskit "
                              f"HumanEval ({overlap.example!r}); the benchmark is never a training set")


def _row_text(prompt: Any) -> str:
    if isinstance(prompt, list):  # chat messages: the user's turns
        return "\n".join(str(m.get("content") or "") for m in prompt if isinstance(m, dict))
    return str(prompt)


def unit_test_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
    """Fraction of each row's asserts that pass; None where the judge could not decide any of them.
    A text prompt is HumanEval's (signature + docstring: the completion may be the body); a chat prompt
    asks for the whole function. Columns `test` and `entry_point` come from the dataset."""
    from evaluation.humaneval.assemble import split_program
    from evaluation.humaneval.scoring import run_programs
    from evaluation.humaneval.tasks import Task

    n = len(completions)
    tests, entries = _column(kwargs, "test", n), _column(kwargs, "entry_point", n)
    jobs: list[dict] = []
    per_row: list[list[str]] = []
    checked: set[tuple[str, str]] = set()
    for i, (prompt, comp, test, entry) in enumerate(zip(prompts, completions, tests, entries, strict=True)):
        text = _row_text(prompt)
        if (text, test) not in checked:
            refuse_contaminated(text + "\n" + test, entry)
            checked.add((text, test))
        variant, task_prompt = ("normal", prompt) if isinstance(prompt, str) else ("hard", "")
        ids = []
        for j, one in enumerate(split_asserts(test)):
            # split as the benchmark is: the completion in G, the assert in the judge (a chat row's test brings
            # its own imports: there is no dataset prompt to take them from)
            prog = split_program(completion_text(comp), Task(f"train/{i}", task_prompt, "", one, entry, ""), variant,
                                 normal_prompt="")
            if prog.code is not None:
                jobs.append({"id": f"{i}/{j}", "code": prog.code, "entry_point": entry, "prelude": prog.prelude,
                             "test": prog.test, "calls_check": prog.calls_check})
                ids.append(f"{i}/{j}")
        per_row.append(ids)
    session = kwargs.get("session") or session_for("humaneval")
    results = dict(run_programs(jobs, session=session))
    rewards: list[float | None] = []
    for ids in per_row:
        decided = [results[k] for k in ids if results[k].get("failure") != JUDGE_ERROR]
        if ids and not decided:
            rewards.append(None)
        else:  # no program at all (empty completion): nothing passed
            rewards.append(sum(bool(o.get("passed")) for o in decided) / len(decided) if decided else 0.0)
    return rewards
