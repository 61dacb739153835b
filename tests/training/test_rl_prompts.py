"""Issue 20: `prepare_dataset.py --rl --out DIR` writes prompt-only rows over a wider space than the
evaluation, with the evaluation's prompts removed exactly as the SFT set does."""

from __future__ import annotations

import json
import subprocess
import sys

from evaluation.prompts import HAMILTONIANS, build_prompts
from quantummind.paths import REPO_ROOT
from quantummind.training.dataset import CONSTRAINTS, FAMILIES, generate_rl_prompts, normalise

PREPARE = REPO_ROOT / "fine-tuning" / "prepare_dataset.py"


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cli_writes_prompt_only_rows_without_eval_prompts(tmp_path):
    proc = subprocess.run([sys.executable, str(PREPARE), "--rl", "--out", str(tmp_path), "--num-examples", "2000"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "removed as evaluation prompts, overlap 0" in proc.stdout
    rows = _rows(tmp_path / "train.jsonl") + _rows(tmp_path / "val.jsonl")
    assert len(rows) == 2000 and len(_rows(tmp_path / "val.jsonl")) == 100
    for r in rows:
        assert set(r) == {"prompt", "hamiltonian", "num_qubits", "constraint", "family"}
        assert [m["role"] for m in r["prompt"]] == ["system", "user"]  # no answer: the policy writes it
        assert r["hamiltonian"] in HAMILTONIANS and 2 <= r["num_qubits"] <= 10
        assert f"{r['num_qubits']}" in r["prompt"][1]["content"]
    banned = {normalise(p.prompt) for p in build_prompts(45)}
    assert not banned & {normalise(r["prompt"][1]["content"]) for r in rows}
    assert {r["family"] for r in rows} == set(FAMILIES)
    assert {r["num_qubits"] for r in rows} == set(range(2, 11))
    assert {r["constraint"] for r in rows} == set(CONSTRAINTS)
    assert len({r["prompt"][1]["content"] for r in rows}) == 2000


def test_the_evaluation_prompts_are_in_the_space_and_removed(tmp_path):
    """Every one of the 45 evaluation prompts would be drawn (the space covers it) and is removed."""
    report = generate_rl_prompts(tmp_path, 100, seed=1)
    assert report.decontaminated == 45 and report.eval_prompt_overlap == 0


def test_same_seed_same_rows(tmp_path):
    generate_rl_prompts(tmp_path / "a", 50, seed=7)
    generate_rl_prompts(tmp_path / "b", 50, seed=7)
    assert (tmp_path / "a" / "train.jsonl").read_bytes() == (tmp_path / "b" / "train.jsonl").read_bytes()


def test_cli_too_many_prompts_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(PREPARE), "--rl", "--out", str(tmp_path / "x"),
                           "--num-examples", "999999"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: only ") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "x").exists()
