"""End to end: the `make demo` pipeline (smaller) through real axolotl, the merge, vLLM and the judge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml


@pytest.mark.slow
def test_demo_pipeline_end_to_end(demo_run):
    run, proc = demo_run.run_dir, demo_run  # the session's demo run (tests/conftest.py), shared with selection tests
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for n in range(1, 11):
        assert f"==> [{n}/10]" in proc.stdout, f"step {n} was not announced"

    # training left checkpoints scored by eval_loss, and the merge chose the best of them: the losses are read
    # here from each checkpoint's own trainer_state.json (the eval logged at its step), not from the merge's report
    report = json.loads((run / "merged" / "merge_report.json").read_text())
    own: dict[str, float] = {}
    for ckpt in (run / "checkpoints" / "tiny-cpu").glob("checkpoint-*"):
        state = json.loads((ckpt / "trainer_state.json").read_text())
        at_step = [e["eval_loss"] for e in state["log_history"]
                   if "eval_loss" in e and e.get("step") == state["global_step"]]
        if at_step:
            own[str(ckpt.resolve())] = at_step[-1]
    assert len(own) >= 2, own  # a choice to make
    best = min(own, key=own.get)
    assert str(Path(report["checkpoint"]).resolve()) == best and report["eval_loss"] == own[best], (report, own)
    assert (run / "checkpoints" / "tiny-cpu" / "training_log.yaml").is_file()

    # the merged model loads with transformers and ships the trained run's tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(run / "merged")
    tok = AutoTokenizer.from_pretrained(run / "merged")
    assert model.config.vocab_size >= len(tok)

    # both models were served and judged; the fine-tuned one writes valid Python more often
    base = yaml.safe_load((run / "eval" / "base" / "validation_log.yaml").read_text())
    tuned = yaml.safe_load((run / "eval" / "finetuned" / "validation_log.yaml").read_text())
    assert base["num_tests"] == tuned["num_tests"] == 24
    assert tuned["syntax_rate"] > base["syntax_rate"], (base, tuned)
    assert list((run / "compare").glob("*.png")), "the comparison plots are missing"
    assert "fine-tuned" in proc.stdout and "syntax_rate" in proc.stdout

    # nothing left running
    assert not list((run / "serve").glob("*.pid"))
