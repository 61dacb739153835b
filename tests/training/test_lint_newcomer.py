"""Issue 23, item 4: lint catches typos, `train` lints first with the same device decision, a missing
local base model is an error, and `steps` without network names the fix."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from quantummind.paths import REPO_ROOT
from quantummind.training import wrapper
from quantummind.training.config import load_config
from quantummind.training.lint import format_report, lint_config

TRAIN_PY = REPO_ROOT / "fine-tuning" / "train.py"


def _messages(report, code: str) -> list[str]:
    return [f.message for f in report.findings if f.code == code]


def test_typos_are_errors_with_a_did_you_mean(tiny_config):
    report = lint_config(load_config(tiny_config(learning_rat=1e-4, lora_rank=8)), gpu=None)
    assert {f.level for f in report.findings if f.code == "unknown_key"} == {"error"}
    msgs = _messages(report, "unknown_key")
    assert len(msgs) == 2, report.findings
    assert "`learning_rat` is not an axolotl config key" in msgs[0] and "Did you mean `learning_rate`?" in msgs[0]
    assert "`lora_rank` is not an axolotl config key" in msgs[1] and "`lora_r`" in msgs[1].split("Did you mean")[1]
    assert "2 error(s)" in format_report(report, "c.yaml")


def test_a_plugin_config_gets_a_warning_not_an_error(tiny_config):
    report = lint_config(load_config(tiny_config(plugins=["axolotl.integrations.liger.LigerPlugin"],
                                                 liger_rope=True, learning_rat=1e-4)), gpu=None)
    levels = {f.level for f in report.findings if f.code == "unknown_key"}
    assert levels <= {"warning"} and any("learning_rat" in m for m in _messages(report, "unknown_key"))


def test_a_missing_local_base_model_is_an_error(tiny_config, tmp_path):
    cfg = load_config(tiny_config(base_model=str(tmp_path / "models" / "not-built")))
    report = lint_config(cfg, gpu=None)
    assert any("does not exist" in m for m in _messages(report, "base_model"))
    assert "base_model" in report.codes("error")
    # relative and not there: a hub id to axolotl, so a warning that also names the local reading
    cfg = load_config(tiny_config(base_model="build/not-built-yet"))
    report = lint_config(cfg, gpu=None)
    assert "base_model" in report.codes("warning")
    assert any("there is none at" in m for m in _messages(report, "base_model"))


def test_train_lints_like_lint_and_prints_the_report_before_launching(tiny_config, monkeypatch, tmp_path):
    """On this CPU host, a GPU config (bf16, 4-bit): `train` reports what `lint` reports, plus that a GPU
    config is not launched here; nothing is launched."""
    monkeypatch.setattr(wrapper, "visible_gpu", lambda: None)
    path = tiny_config(bf16=True, fp16=None, load_in_4bit=True, adapter="qlora", flash_attention=True)
    cfg = load_config(path)
    linted = lint_config(cfg, gpu=None)
    launched = []
    monkeypatch.setattr(wrapper, "stream", lambda *a, **k: launched.append(a) or (1, ""))
    out = io.StringIO()
    result = wrapper.train(str(path), cfg, [], out=out)
    extra = [f for f in result.lint.findings if f not in linted.findings]
    assert [(f.level, f.code) for f in extra] == [("error", "device")], extra
    assert launched == [] and "+ " not in out.getvalue()
    assert format_report(result.lint, str(path)) in out.getvalue()
    # a clean CPU config: the report is on the output before the launch line
    path = tiny_config("clean")
    monkeypatch.setattr(wrapper, "stream", lambda cmd, env, o, **k: (o.write("LAUNCHED\n"), (1, ""))[1])
    out = io.StringIO()
    wrapper.train(str(path), load_config(path), [], out=out)
    text = out.getvalue()
    assert "0 error(s)" in text and text.index("0 error(s)") < text.index("+ ") < text.index("LAUNCHED")


def test_train_cli_stops_on_a_typo_before_launching(tiny_config):
    path = tiny_config("typo", learning_rat=1e-4)
    proc = subprocess.run([sys.executable, str(TRAIN_PY), "train", str(path)], capture_output=True, text=True,
                          timeout=300, cwd=path.parent)
    assert proc.returncode == 1 and "Did you mean `learning_rate`?" in proc.stdout
    assert "accelerate" not in proc.stdout


def test_steps_offline_names_the_tokenizer_flag(tiny_config):
    path = tiny_config("hub", base_model="qm-no-such-org/no-such-model")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(TRAIN_PY), "steps", str(path)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--tokenizer DIR" in lines[0], proc.stderr


@pytest.mark.parametrize("value", ["0", "-3"])
def test_verify_max_new_tokens_below_1_is_a_usage_error(tiny_config, value):
    proc = subprocess.run([sys.executable, str(TRAIN_PY), "verify", str(tiny_config()), "--max-new-tokens", value],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--max-new-tokens must be >= 1" in lines[0], proc.stderr
