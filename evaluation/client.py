"""Query an OpenAI-compatible endpoint concurrently; every reply is appended to replies.jsonl at once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

from evaluation.prompts import PromptSpec
from evaluation.report import parse_jsonl

log = logging.getLogger(__name__)


class EndpointError(RuntimeError):
    """Server unreachable, wrong model name, or the server went away mid-run (exit status 2)."""


@dataclass
class CollectSummary:
    requested: int
    already_done: int
    received: int
    failed: int
    seconds: float


def preflight(base_url: str, api_key: str, models: list[str], timeout_s: float = 10.0) -> list[str]:
    """GET /v1/models once, no retries: fail fast with a line a human can act on."""
    client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)
    try:
        served = [m.id for m in client.models.list().data]
    except openai.APIConnectionError as exc:
        raise EndpointError(f"cannot reach {base_url} ({exc.__cause__ or exc}); is the server running?") from None
    except openai.APIStatusError as exc:
        hint = ""
        if exc.status_code == 404 and not base_url.rstrip("/").endswith("/v1"):
            hint = f"; did you mean {base_url.rstrip('/')}/v1 (the OpenAI API lives under /v1)?"
        raise EndpointError(f"{base_url}/models answered HTTP {exc.status_code}: {str(exc)[:200]}{hint}") from None
    finally:
        client.close()
    missing = [m for m in models if m not in served]
    if missing:
        raise EndpointError(f"model {', '.join(repr(m) for m in missing)} is not served at {base_url}; "
                            f"served models: {', '.join(served) or '(none)'}")
    return served


def read_replies(path: Path) -> list[dict]:
    """Complete lines only: a torn last line (process killed mid-write) is dropped from the file."""
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        log.warning("%s: dropping a torn last line (%d bytes)", path, len(data) - cut)
        with open(path, "r+b") as fh:
            fh.truncate(cut)
        data = data[:cut]
    return parse_jsonl(data.decode("utf-8"), path)


def _status_message(exc: openai.APIStatusError) -> str:
    """The server's own message (OpenAI error JSON: {"error": {"message": ...}} or {"message": ...})."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        msg = inner.get("message") if isinstance(inner, dict) else inner
        if msg:
            return " ".join(str(msg).split())[:200]
    return " ".join(str(exc).split())[:200]


def latest_by_id(records: list[dict]) -> list[dict]:
    """One record per id, the last one written (a resumed run appends a retried request's reply after
    its refusal), in first-seen order. Only a refusal (finish_reason "error") may be replaced: any other
    repeated id is a ValueError (two replies to one prompt would silently lose one)."""
    seen_ok: dict = {}
    for i, r in enumerate(records, 1):
        rid = r.get("id")
        if rid in seen_ok:
            raise ValueError(f"duplicate id {rid!r} (records {seen_ok[rid]} and {i}): only a refused request "
                             f"(finish_reason error) may be sent again")
        if r.get("finish_reason") != "error":
            seen_ok[rid] = i
    last = {r.get("id"): r for r in records}
    seen: dict = {}
    for r in records:
        seen.setdefault(r.get("id"), last[r.get("id")])
    return list(seen.values())


def request_sha1(spec: Any, api: str) -> str:
    """What was sent for one prompt (the chat messages, or the raw prompt for `completions`), hashed: a
    resumed run must ask the same thing under the same id."""
    sent = spec.prompt if api == "completions" else spec.messages
    return hashlib.sha1(json.dumps([api, sent], sort_keys=True).encode("utf-8")).hexdigest()[:16]


def check_resumable(stored: list[dict], prompts: list[Any], *, model: str, sampling: dict, api: str,
                    path: Path) -> None:
    """EndpointError (one line) unless every stored record answers one of `prompts` with the same model,
    sampling settings (temperature, max_tokens, seed) and request text: --resume must not mix runs."""
    by_id = {p.id: p for p in prompts}
    for r in stored:
        rid = r.get("id")
        if rid not in by_id:
            raise EndpointError(f"{path} holds a reply to {rid!r}, which this run does not ask for (a different "
                                f"--num-tests/--num-tasks/--samples?); resume with the same settings or choose "
                                f"another --out")
        if r.get("model") != model:
            raise EndpointError(f"{path} was made with model {r.get('model')!r}, not {model!r}: resuming would mix "
                                f"two models under one name; choose another --out")
        if r.get("sampling") != sampling:
            raise EndpointError(f"{path} was made with {r.get('sampling') or 'unrecorded settings'}, not {sampling}: "
                                f"resume with the same --temperature/--max-tokens/--seed or choose another --out")
        if r.get("request_sha1") != request_sha1(by_id[rid], api):
            raise EndpointError(f"{path}: the stored request for {rid!r} differs from this run's (a different "
                                f"--variant/--api or prompt text); choose another --out")


def _record(spec: PromptSpec, model: str, reply: str, latency: float, finish: str | None, **extra) -> dict[str, Any]:
    rec = {"id": spec.id, "hamiltonian": spec.hamiltonian, "num_qubits": spec.num_qubits,
           "constraint": spec.constraint, "prompt": spec.prompt, "reply": reply, "model": model,
           "latency_s": round(latency, 4), "finish_reason": finish}
    rec.update(extra)
    return rec


async def _ask(client: openai.AsyncOpenAI, spec: PromptSpec, model: str, sem: asyncio.Semaphore,
               params: dict, api: str = "chat", make_record=_record) -> dict:
    """One request: `chat` sends spec.messages, `completions` the raw spec.prompt (base models)."""
    async with sem:
        t0 = time.perf_counter()
        try:
            if api == "completions":
                resp = await client.completions.create(model=model, prompt=spec.prompt, **params(spec))
            else:
                resp = await client.chat.completions.create(model=model, messages=spec.messages, **params(spec))
        except (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError):
            raise  # after the client's own retries: the endpoint is gone
        except openai.APIStatusError as exc:  # a per-request refusal (e.g. 400): record it, go on
            # not a reply: scoring leaves it out of every rate and lists it (request_errors), exit 2
            return make_record(spec, model, "", time.perf_counter() - t0, "error", http_status=exc.status_code,
                               error=f"HTTP {exc.status_code}: {_status_message(exc)}")
        choice = resp.choices[0]
        text = choice.text if api == "completions" else choice.message.content
        return make_record(spec, model, text or "", time.perf_counter() - t0, choice.finish_reason)


async def collect(prompts: list[PromptSpec], *, base_url: str, model: str, api_key: str, out_path: Path,
                  concurrency: int = 16, temperature: float = 0.7, max_tokens: int = 1024,
                  seed: int | None = None, request_timeout_s: float = 300.0, max_retries: int = 3,
                  progress: bool = True, resume: bool = False, api: str = "chat",
                  make_record=_record) -> CollectSummary:
    """Send every prompt not yet in out_path; append each reply as it arrives (flushed). `api`: "chat" or
    "completions"; `make_record(spec, model, reply, latency, finish_reason, **extra)` builds each line (it
    keeps spec.id as "id": resume reads it)."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out_path.exists() and not resume and out_path.stat().st_size > 0:
        raise EndpointError(f"{out_path} exists: pass --resume to continue it or choose another --out")
    sampling = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed}
    stored = read_replies(out_path) if resume else []
    check_resumable(stored, prompts, model=model, sampling=sampling, api=api, path=out_path)
    # a refused request (finish_reason "error") is not done: --resume sends it again
    done = {r["id"] for r in stored if r.get("finish_reason") != "error"}
    todo = [p for p in prompts if p.id not in done]
    t0 = time.perf_counter()
    received = failed = 0
    index = {p.id: i for i, p in enumerate(prompts)}

    def params(spec: PromptSpec) -> dict:
        p: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens}
        if seed is not None:
            p["seed"] = seed + index[spec.id]  # distinct but reproducible samples for repeated prompts
        return p

    client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, timeout=request_timeout_s, max_retries=max_retries)
    sem = asyncio.Semaphore(max(1, concurrency))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc=f"querying {model}", unit="reply")
    def record(spec, *args, **extra) -> dict:  # every line says how it was asked (check_resumable reads it)
        return make_record(spec, *args, sampling=sampling, request_sha1=request_sha1(spec, api), **extra)

    tasks = [asyncio.ensure_future(_ask(client, spec, model, sem, params, api, record)) for spec in todo]
    try:
        with open(out_path, "a", encoding="utf-8") as fh:
            for fut in asyncio.as_completed(tasks):
                try:
                    rec = await fut
                except (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError) as exc:
                    raise EndpointError(
                        f"lost the server at {base_url} after {received} new replies ({type(exc).__name__}: "
                        f"{str(exc)[:150]}); the {len(done) + received} replies received are in {out_path}, "
                        f"rerun with --resume to continue") from None
                fh.write(json.dumps(rec, ensure_ascii=True) + "\n")
                fh.flush()
                received += 1
                failed += rec["finish_reason"] == "error"
                if bar:
                    bar.update(1)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if bar:
            bar.close()
        await client.close()
    return CollectSummary(requested=len(prompts), already_done=len(done), received=received, failed=failed,
                          seconds=time.perf_counter() - t0)
