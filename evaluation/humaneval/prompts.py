"""What `humaneval run` sends: chat messages (instruction + task) or the raw prompt (completions API)."""

from __future__ import annotations

from dataclasses import dataclass, field

from evaluation.humaneval.tasks import Task

APIS = ("chat", "completions")
SYSTEM_PROMPT = "You are an expert Python programmer who writes correct, idiomatic Qiskit code."
NORMAL_INSTRUCTION = ("Complete the following Python function. Reply with the complete function, including the "
                      "imports it needs, in a single ```python code block.")
HARD_INSTRUCTION = ("Solve the following task in Python with Qiskit. Reply with the complete function, including "
                    "the imports it needs, in a single ```python code block.")


@dataclass(frozen=True)
class HumanEvalRequest:
    """One request: the evaluation client reads id, prompt (completions) and messages (chat)."""
    id: str
    task_id: str
    sample: int
    prompt: str
    messages: list[dict[str, str]] = field(hash=False, compare=False)


def chat_text(task: Task, variant: str) -> str:
    """The user turn: normal: the instruction and the prompt (imports + signature + docstring) in a fence;
    hard: the instruction and the problem statement."""
    if variant == "normal":
        return f"{NORMAL_INSTRUCTION}\n\n```python\n{task.prompt}\n```"
    return f"{HARD_INSTRUCTION}\n\n{task.prompt}"


def request_id(task_id: str, sample: int) -> str:
    return f"{task_id}#{sample}"


def build_requests(tasks: list[Task], variant: str, num_samples: int) -> list[HumanEvalRequest]:
    """num_samples requests per task, task-major (ids `qiskitHumanEval/0#0`, `#1`, ...)."""
    if num_samples < 1:
        raise ValueError("--samples must be >= 1")
    out = []
    for t in tasks:
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": chat_text(t, variant)}]
        for s in range(num_samples):
            out.append(HumanEvalRequest(id=request_id(t.task_id, s), task_id=t.task_id, sample=s, prompt=t.prompt,
                                        messages=messages))
    return out


def sample_record(spec: HumanEvalRequest, model: str, reply: str, latency: float, finish: str | None,
                  **extra) -> dict:
    """One samples.jsonl line: task_id, sample, completion, model, finish_reason (+ id, latency_s, error)."""
    rec = {"task_id": spec.task_id, "sample": spec.sample, "completion": reply, "model": model,
           "finish_reason": finish, "id": spec.id, "latency_s": round(latency, 4)}
    rec.update(extra)
    return rec
