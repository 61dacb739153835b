"""Issue 20: the judge as a GRPO reward (quantummind.rewards) through a kept-alive sandbox (evaluation.sandbox.Session).

Labelled replies written as Qwen2.5-Coder / Llama-3.1 answer (prose + one fence), labels fixed before
running; hostile replies (the forgery corpus of issue 10 and the verdict-channel / judge-crash holes of
issue 17) must earn no more than their true verdict. One kept-alive session per kind for the module."""

import logging
import os
import signal
import time

import pytest

from evaluation.sandbox import SandboxLimits, Session
from evaluation.scoring import circuit_cfg, score_replies
from quantummind import rewards
from quantummind.rewards import CIRCUIT_WEIGHTS as W
from quantummind.rewards import circuit_reward, grade_circuit, split_asserts, unit_test_reward

from eval_replies_cases import fence, rycx
from test_eval_judge_forgery import FORGED

RY_ONLY = "Use only RY and CX gates"

# Qwen2.5-Coder-style answers; label = the reward tier, decided before running.
QWEN_HEA = """Here's a hardware-efficient ansatz for the 4-qubit Heisenberg model using only RY and CX gates:

```python
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector

def create_ansatz(num_qubits, layers=2):
    params = ParameterVector('θ', num_qubits * (layers + 1))
    qc = QuantumCircuit(num_qubits)
    idx = 0
    for layer in range(layers):
        for q in range(num_qubits):
            qc.ry(params[idx], q)
            idx += 1
        for q in range(num_qubits - 1):
            qc.cx(q, q + 1)
    for q in range(num_qubits):
        qc.ry(params[idx], q)
        idx += 1
    return qc

qc = create_ansatz(4)
print(qc)
```

This circuit alternates RY rotation layers with a linear CX entangling ladder."""
LLAMA_H_RZ = """To prepare the ground state, we can use the following circuit:

```python
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter

qc = QuantumCircuit(4)
for i in range(4):
    qc.h(i)
    qc.rz(Parameter(f"theta_{i}"), i)
for i in range(3):
    qc.cx(i, i + 1)
```

The Hadamard gates create a superposition and the RZ rotations are the variational parameters."""
LLAMA_OLD_API = """Sure! Here is a VQE ansatz:

```python
from qiskit import QuantumCircuit, execute, Aer
from qiskit.circuit import Parameter

qc = QuantumCircuit(4)
qc.ry(Parameter("a"), 0)
backend = Aer.get_backend("statevector_simulator")
result = execute(qc, backend).result()
```"""
WRONG_SIZE = fence(rycx(3))
NO_PARAMS = fence("from qiskit import QuantumCircuit\nqc = QuantumCircuit(4)\nqc.h(0)\nqc.cx(0, 1)\n")
NO_CODE = "I'm sorry, but I can't write that circuit without more details about the Hamiltonian."
# label -> (reply, exact reward)
LABELLED = {
    "qwen_hea_verified_ry_cx": (QWEN_HEA, W.verified + W.bp_free + W.constraint),
    # a literal 4-qubit circuit: nothing to rebuild at larger sizes, so its BP verdict is undecided (issue 18) and
    # earns no BP bonus; the H gates break "Use only RY and CX gates": no constraint bonus either
    "llama_h_rz_breaks_constraint": (LLAMA_H_RZ, W.verified),
    "llama_removed_api_crashes": (LLAMA_OLD_API, W.crashed),
    "three_qubits_for_four": (WRONG_SIZE, W.circuit),
    "runs_but_builds_nothing": (fence("import math\nangle = math.pi / 4\nprint(angle)\n"), W.runs),
    "four_qubits_no_parameters": (NO_PARAMS, W.qubits),
    "no_code": (NO_CODE, 0.0),
}

# Issue 17, hole 1: the reply writes a well-formed header (a valid circuit's QPY) on the result fd, then
# fails. True verdict: its own failure (a crash), never "verified".
FORGED_HEADER = rycx(4) + '''import base64, io, json, os
from qiskit import qpy
buf = io.BytesIO()
qpy.dump(qc, buf)
os.write(3, (json.dumps({"exec_error": None, "found_by": "variable qc",
                         "qpy": base64.b64encode(buf.getvalue()).decode()}) + "\\n").encode())
raise RuntimeError("crashed after forging the header")
'''
# Issue 17, hole 4: a GlobalPhaseGate crashed the judge's simulator (judge_error: left out of the reward).
GLOBAL_PHASE_GATE = rycx(4) + '''from qiskit.circuit.library import GlobalPhaseGate
qc.append(GlobalPhaseGate(0.3), [])
'''


@pytest.fixture(scope="module")
def session():
    with Session(circuit_cfg(workers=2)) as s:
        yield s


def _kw(n: int, constraint: str = RY_ONLY, qubits: int = 4) -> dict:
    return {"hamiltonian": ["heisenberg"] * n, "num_qubits": [qubits] * n, "constraint": [constraint] * n}


@pytest.fixture(scope="module")
def labelled(session):
    names = list(LABELLED)
    comps = [LABELLED[k][0] for k in names]
    metrics: dict = {}
    got = circuit_reward(None, comps, session=session, log_metric=lambda k, v: metrics.setdefault(k, v), **_kw(len(comps)))
    return dict(zip(names, got)), metrics


@pytest.mark.parametrize("name", list(LABELLED))
def test_labelled_replies_earn_their_tier(labelled, name):
    assert labelled[0][name] == pytest.approx(LABELLED[name][1]), name


def test_monotone_every_verified_above_every_unverified(labelled):
    got = labelled[0]
    verified = [got[k] for k in ("qwen_hea_verified_ry_cx", "llama_h_rz_breaks_constraint")]
    others = [v for k, v in got.items() if k not in ("qwen_hea_verified_ry_cx", "llama_h_rz_breaks_constraint")]
    assert min(verified) > max(others)
    # and by construction of the weights, whatever the bonuses
    assert W.verified > max(W.qubits, W.circuit, W.runs, W.crashed)
    assert 0 < W.crashed < W.runs < W.circuit < W.qubits < W.verified


def test_components_logged_per_batch(labelled):
    metrics = labelled[1]
    assert metrics["circuit/verified"] == pytest.approx(2 / len(LABELLED))
    assert metrics["circuit/judge_error"] == 0.0


def test_chat_message_completions_score_like_strings(session):
    comps = [[{"role": "assistant", "content": QWEN_HEA}], [{"role": "assistant", "content": NO_CODE}]]
    assert circuit_reward(None, comps, session=session, **_kw(2)) == [pytest.approx(1.0), 0.0]


def test_reward_equals_the_fresh_score_replies_verdict(session):
    """The kept-alive session and a fresh `evaluation score` server agree field by field."""
    replies = [QWEN_HEA, LLAMA_H_RZ, WRONG_SIZE, FORGED["renamed_ry"]]
    records = [{"id": str(i), "hamiltonian": "heisenberg", "num_qubits": 4, "constraint": RY_ONLY, "reply": r}
               for i, r in enumerate(replies)]
    fresh = score_replies(records, workers=2)
    kept = score_replies(records, workers=2, session=session)
    for a, b in zip(fresh, kept):
        for k in ("verification_pass", "bp_free", "failure", "depth", "constraint_satisfied", "num_qubits_found"):
            assert a[k] == b[k], (k, a[k], b[k])


def test_session_refuses_other_verdict_settings(session):
    records = [{"id": "a", "hamiltonian": "heisenberg", "num_qubits": 4, "reply": QWEN_HEA}]
    with pytest.raises(ValueError, match="other settings"):
        score_replies(records, session=session, limits=SandboxLimits(timeout_s=3))


@pytest.mark.parametrize("name", list(FORGED))
def test_forged_replies_earn_no_more_than_their_true_verdict(session, name):
    """Issue 10's forgeries: none is a valid ansatz honouring "only RY and CX"; each earns at most an
    unverified circuit's reward (ry_with_h_inside: verified at most, never the constraint bonus)."""
    (got,) = circuit_reward(None, [fence(FORGED[name])], session=session, **_kw(1))
    assert got is not None
    cap = W.verified + W.bp_free if name == "ry_with_h_inside" else W.qubits
    assert got <= cap + 1e-9, (name, got)


def test_forged_header_then_crash_earns_a_crash(session):
    """Issue 17 hole 1: fails on the sandbox before the package (the forged header earned 1.0)."""
    got = circuit_reward(None, [fence(FORGED_HEADER), QWEN_HEA], session=session, **_kw(2))
    assert got[0] is not None and got[0] <= W.crashed and got[1] == pytest.approx(1.0)


def test_reply_cannot_crash_its_judge_into_none(session):
    """Issue 17 hole 4: a GlobalPhaseGate crashed the judge, and judge_error let the reply leave the reward."""
    (got,) = circuit_reward(None, [fence(GLOBAL_PHASE_GATE)], session=session, **_kw(1, constraint=""))
    assert got is not None


def test_judge_error_is_none_never_zero(monkeypatch):
    """TEST-ONLY judge fault (cfg["_fault_judge"], the hook of test_eval_judge_faults.py): the first job
    of the session raises in the judge; the reward is None, the reply after it is scored."""
    cfg = dict(circuit_cfg(workers=1), _fault_judge={"0": "raise"})
    with Session(cfg) as faulty:
        got = circuit_reward(None, [QWEN_HEA, QWEN_HEA], session=faulty, **_kw(2))
    assert got[0] is None and got[1] == pytest.approx(1.0)
    assert grade_circuit({"judge_error": "x", "verification_pass": True}) is None


def _server_pids() -> list[int]:
    """This process's fork servers (`python -m evaluation.sandbox`), read from /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            cmd = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == os.getpid() and stat[0] != "Z" and b"evaluation.sandbox" in cmd:
            pids.append(int(entry))
    return pids


def _state(pid: int) -> str | None:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def test_dead_server_restarts_with_a_warning(caplog):
    before = set(_server_pids())
    with Session(circuit_cfg(workers=1)) as s:
        assert circuit_reward(None, [QWEN_HEA], session=s, **_kw(1)) == [pytest.approx(1.0)]
        (first,) = set(_server_pids()) - before
        os.killpg(first, signal.SIGKILL)  # the fork server (its own session) and its forks
        deadline = time.monotonic() + 10
        while _state(first) not in ("Z", None) and time.monotonic() < deadline:  # dead before the next call
            time.sleep(0.05)
        with caplog.at_level(logging.WARNING, logger="evaluation.sandbox.client"):
            assert circuit_reward(None, [QWEN_HEA], session=s, **_kw(1)) == [pytest.approx(1.0)]
        assert s.starts == 2 and set(_server_pids()) - before - {first}
        assert any("starting a new one" in r.getMessage() for r in caplog.records)


def test_lazy_module_session_is_reused_and_closed(monkeypatch):
    monkeypatch.setenv(rewards.WORKERS_ENV, "1")
    rewards.close_sessions()
    before = set(_server_pids())  # other tests' sessions
    try:
        circuit_reward(None, [NO_PARAMS], **_kw(1))
        s = rewards.session_for("circuit")
        assert s.starts == 1 and s.cfg["workers"] == 1 and len(set(_server_pids()) - before) == 1
        circuit_reward(None, [NO_PARAMS], **_kw(1))
        assert s.starts == 1 and len(set(_server_pids()) - before) == 1
    finally:
        rewards.close_sessions()
    assert set(_server_pids()) - before == set()


def test_bad_workers_env_is_one_line(monkeypatch):
    monkeypatch.setenv(rewards.WORKERS_ENV, "lots")
    with pytest.raises(ValueError, match="QM_REWARD_WORKERS"):
        rewards.reward_workers()


def test_missing_column_is_named(session):
    with pytest.raises(ValueError, match="num_qubits"):
        circuit_reward(None, [QWEN_HEA], session=session, hamiltonian=["heisenberg"])


# ------------------------------------------------------------------------------------------ unit tests

ADD_TEST = '''def check(candidate):
    assert candidate(1, 2) == 3
    assert candidate(0, 0) == 0
    assert candidate(-1, 1) == 0
    assert candidate(2, 2) == 5
'''
ADD_PROMPT = 'def add(a: int, b: int) -> int:\n    """Return the sum of a and b."""\n'


@pytest.fixture(scope="module")
def he_session():
    from evaluation.humaneval.scoring import humaneval_cfg

    with Session(humaneval_cfg(workers=2)) as s:
        yield s


def test_split_asserts_one_program_per_assert():
    progs = split_asserts(ADD_TEST)
    assert len(progs) == 4 and all(p.count("assert ") == 1 for p in progs)


def test_unit_test_reward_is_the_passing_fraction(he_session):
    chat = [{"role": "user", "content": "Write add(a, b)."}]
    comps = ["```python\ndef add(a, b):\n    return a + b\n```",          # 3 of 4 (the 4th assert is wrong)
             "```python\ndef add(a, b):\n    return a * b\n```",          # (0,0) only: 1 of 4
             "    return a + b\n",                                          # body for the text prompt: 3 of 4
             "I don't know."]                                               # no function: 0
    prompts = [chat, chat, ADD_PROMPT, chat]
    got = unit_test_reward(prompts, comps, session=he_session, test=[ADD_TEST] * 4, entry_point=["add"] * 4)
    assert got == [pytest.approx(0.75), pytest.approx(0.25), pytest.approx(0.75), 0.0]


def test_unit_test_reward_refuses_humaneval_rows(he_session):
    from evaluation.humaneval.tasks import load_tasks

    task = load_tasks("normal")[0]
    with pytest.raises(rewards.ContaminatedRow, match="never a training set"):
        unit_test_reward([task.prompt], ["    pass\n"], session=he_session, test=[task.test],
                         entry_point=[task.entry_point])
