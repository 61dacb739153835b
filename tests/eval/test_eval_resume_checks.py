"""Issue 19, item 6: `--resume` refuses stored replies made another way (model, sampling, prompt set), and
`score` refuses a repeated id unless the earlier record is a refusal that a resume sent again."""

from __future__ import annotations

import asyncio
import json

import pytest

from evaluation.cli import main
from evaluation.client import EndpointError, _record, collect, latest_by_id, request_sha1
from evaluation.prompts import build_prompts

DEAD = "http://127.0.0.1:9/v1"  # nothing listens: a refusal must come before any request
SAMPLING = {"temperature": 0.7, "max_tokens": 256, "seed": 1}


def _stored(path, prompts, model="base", sampling=SAMPLING, api="chat"):
    with open(path, "w", encoding="utf-8") as fh:
        for p in prompts:
            rec = _record(p, model, "```python\nqc = 1\n```", 0.1, "stop", sampling=sampling,
                          request_sha1=request_sha1(p, api))
            fh.write(json.dumps(rec) + "\n")


def _resume(path, prompts, model="base", **kw):
    settings = {"temperature": 0.7, "max_tokens": 256, "seed": 1} | kw
    return asyncio.run(collect(prompts, base_url=DEAD, model=model, api_key="x", out_path=path, progress=False,
                               resume=True, max_retries=0, request_timeout_s=2, **settings))


@pytest.mark.parametrize("change, message", [
    ({"model": "tuned"}, "mix two models"),
    ({"temperature": 0.2}, "--temperature"),
    ({"max_tokens": 1024}, "--max-tokens"),
    ({"seed": None}, "--seed"),
])
def test_resume_refuses_other_settings(tmp_path, change, message):
    prompts = build_prompts(3)
    path = tmp_path / "replies.jsonl"
    _stored(path, prompts)
    before = path.read_bytes()
    with pytest.raises(EndpointError, match=message.replace("-", r"\-")):
        _resume(path, prompts, **change)
    assert path.read_bytes() == before  # nothing appended


def test_resume_refuses_another_prompt_set_and_other_requests(tmp_path):
    path = tmp_path / "replies.jsonl"
    _stored(path, build_prompts(5))
    with pytest.raises(EndpointError, match="does not ask for"):  # --num-tests 5 before, 3 now
        _resume(path, build_prompts(3))
    _stored(path, build_prompts(3), api="completions")
    with pytest.raises(EndpointError, match="stored request"):
        _resume(path, build_prompts(3))
    old = tmp_path / "old.jsonl"  # a file from before the settings were recorded: cannot be checked
    old.write_text("".join(json.dumps(_record(p, "base", "x", 0.1, "stop")) + "\n" for p in build_prompts(2)))
    with pytest.raises(EndpointError, match="unrecorded settings"):
        _resume(old, build_prompts(2))


def test_resume_with_the_same_settings_sends_only_what_is_missing(tmp_path):
    prompts = build_prompts(3)
    path = tmp_path / "replies.jsonl"
    _stored(path, prompts)
    s = _resume(path, prompts)  # all done: nothing is sent, so the dead endpoint is never reached
    assert (s.already_done, s.received) == (3, 0)


def test_score_refuses_a_repeated_id_but_not_a_resent_refusal(tmp_path, capsys):
    prompts = build_prompts(2)
    answer = _record(prompts[0], "base", "```python\nqc = 1\n```", 0.1, "stop")
    refused = _record(prompts[0], "base", "", 0.1, "error", error="HTTP 400: too long")
    assert latest_by_id([refused, answer]) == [answer]
    with pytest.raises(ValueError, match="duplicate id"):
        latest_by_id([answer, dict(answer, reply="another reply")])
    with pytest.raises(ValueError, match="duplicate id"):
        latest_by_id([answer, refused])  # an answer is never replaced, not even by a refusal
    path = tmp_path / "replies.jsonl"
    path.write_text(json.dumps(answer) + "\n" + json.dumps(dict(answer, reply="x")) + "\n")
    assert main(["score", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "duplicate id" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
