"""`train.py steps`: optimizer steps with and without sample packing, against hand counts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from quantummind.paths import REPO_ROOT, offline_env
from quantummind.training.steps import count_steps, steps_from_lengths

TRAIN_PY = REPO_ROOT / "fine-tuning" / "train.py"


def test_without_packing_steps_are_examples_over_the_batch():
    cfg = {"micro_batch_size": 2, "gradient_accumulation_steps": 2, "num_epochs": 3, "sample_packing": False}
    # 10 examples, batch 4: 3 steps an epoch; ceil(10 * 3 / 4) = 8 over the run (the Trainer's count)
    assert steps_from_lengths([100] * 10, cfg) == (3, None, None, 8)


@pytest.mark.parametrize("mbs, flash, rows, per_epoch", [
    (1, True, 50, 50),   # 1024-token rows hold 2 examples: 50 rows, batch 1
    (2, True, 25, 25),   # flash attention: one 2048-token row per micro batch holds 4: 25 rows
    (2, False, 50, 25),  # no flash: 2 rows of 1024 per micro batch, 2 examples each: 25 micro batches
])
def test_with_packing_steps_count_packed_rows(mbs, flash, rows, per_epoch):
    cfg = {"micro_batch_size": mbs, "gradient_accumulation_steps": 1, "num_epochs": 2, "sample_packing": True,
           "sequence_len": 1024, "flash_attention": flash}
    assert steps_from_lengths([512] * 100, cfg) == (per_epoch, rows, 1.0, 2 * per_epoch)


def _chat(n: int) -> dict:
    return {"messages": [{"role": "user", "content": f"Make a {n}-qubit circuit."},
                         {"role": "assistant", "content": "qc = QuantumCircuit(%d)\n" % n + "qc.h(0)\n" * n}]}


def test_count_steps_tokenizes_the_train_set_and_drops_long_examples(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    rows = [_chat(n) for n in range(1, 41)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    lengths = [len(tok.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"])
               for r in rows]
    seq_len = sorted(lengths)[29]  # 30 fit, 10 are longer
    cfg = {"datasets": [{"path": str(data)}], "sequence_len": seq_len, "micro_batch_size": 1,
           "gradient_accumulation_steps": 3, "num_epochs": 1, "sample_packing": False}
    count = count_steps(cfg, tiny_model_dir)
    kept = [n for n in lengths if n <= seq_len]
    assert (count.examples, count.dropped_long, count.total_tokens) == (40, 40 - len(kept), sum(kept))
    assert count.total_steps == -(-len(kept) // 3)
    assert count.chars_per_token > 1


def test_cli_prints_the_count_and_fails_cleanly_without_data(tiny_model_dir, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(_chat(n)) + "\n" for n in range(1, 21)))
    cfg = {"base_model": str(tiny_model_dir), "datasets": [{"path": str(data)}], "sequence_len": 2048,
           "micro_batch_size": 2, "gradient_accumulation_steps": 8, "num_epochs": 3, "sample_packing": True,
           "flash_attention": True}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, str(TRAIN_PY), "steps", str(path), "--json"], capture_output=True,
                          text=True, env=offline_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout[proc.stdout.index("{"):])
    # 20 short chats fit one 4096-token row: 1 micro batch < 8 accumulated -> axolotl's floor of 1 step
    assert (out["examples"], out["packed_sequences"], out["steps_per_epoch"], out["total_steps"]) == (20, 1, 1, 3)
    data.unlink()
    proc = subprocess.run([sys.executable, str(TRAIN_PY), "steps", str(path)], capture_output=True, text=True,
                          env=offline_env(), timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "not found" in proc.stderr
