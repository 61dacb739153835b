"""Helpers for the merge tests: real axolotl training runs on the tiny model, PEFT-built runs.

Training goes through axolotl's own train CLI in a child process, via
quantummind.training.cpu_qlora_launch, which only disables bitsandbytes' AVX512-BF16 inference
repack first: it breaks QLoRA training after the first eval on CPUs that have it (see
/work/shared/notes/cpu-feasibility.md).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from quantummind.paths import offline_env

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def qiskit_chat_examples(n: int, seed: int) -> list[dict]:
    """Small Qiskit Q&A chats: enough signal for a tiny model to move its eval loss."""
    rng = random.Random(seed)
    gates = ["ry", "rx", "rz", "h"]
    ents = ["cx", "cz"]
    out = []
    for _ in range(n):
        q = rng.choice([2, 3, 4, 5, 6])
        g = rng.choice(gates)
        e = rng.choice(ents)
        user = f"Create a {q}-qubit circuit with {g.upper()} rotations and {e.upper()} entanglers."
        body = [f"qc = QuantumCircuit({q})"]
        body += [f"qc.{g}(0.5, {i})" if g != "h" else f"qc.h({i})" for i in range(q)]
        body += [f"qc.{e}({i}, {i + 1})" for i in range(q - 1)]
        reply = "```python\nfrom qiskit import QuantumCircuit\n" + "\n".join(body) + "\n```"
        out.append({"messages": [
            {"role": "system", "content": "You are a quantum computing expert that generates Qiskit circuits."},
            {"role": "user", "content": user},
            {"role": "assistant", "content": reply},
        ]})
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@dataclass
class TrainedRun:
    config: Path
    output_dir: Path
    base_model: Path


def axolotl_config(base: Path, work: Path, *, qlora: bool = False, tokens: list[str] | None = None,
                   max_steps: int = 9, every: int = 3, lr: float = 5e-3, extra: dict | None = None) -> dict:
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    train = write_jsonl(data / "train.jsonl", qiskit_chat_examples(32, seed=1))
    val = write_jsonl(data / "val.jsonl", qiskit_chat_examples(8, seed=2))
    ds = {"ds_type": "json", "type": "chat_template", "field_messages": "messages",
          "roles_to_train": ["assistant"]}
    cfg: dict = {
        "base_model": str(base),
        "datasets": [{"path": str(train), **ds}],
        "test_datasets": [{"path": str(val), "split": "train", **ds}],
        "chat_template": "tokenizer_default",
        "dataset_prepared_path": str(work / "prepared"),
        "output_dir": str(work / "out" / "tiny-run"),
        "adapter": "qlora" if qlora else "lora",
        "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
        "lora_target_modules": TARGETS,
        "lora_mlp_kernel": False,
        "sequence_len": 256, "sample_packing": False,
        "micro_batch_size": 2, "gradient_accumulation_steps": 2,
        "max_steps": max_steps, "learning_rate": lr, "lr_scheduler": "constant",
        "optimizer": "adamw_torch", "warmup_steps": 0,
        "eval_strategy": "steps", "eval_steps": every, "save_steps": every,
        "save_total_limit": 20,
        "bf16": False, "fp16": False, "tf32": False, "flash_attention": False,
        "seed": 0, "logging_steps": 1,
    }
    if qlora:
        cfg["load_in_4bit"] = True
    if tokens:
        cfg["tokens"] = tokens
        cfg["lora_modules_to_save"] = ["embed_tokens", "lm_head"]
    cfg.update(extra or {})
    return cfg


def train(cfg: dict, work: Path) -> TrainedRun:
    cfg_path = work / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    log = work / "train.log"
    with open(log, "wb") as fh:
        proc = subprocess.run([sys.executable, "-m", "quantummind.training.cpu_qlora_launch", str(cfg_path)],
                              cwd=work, env=offline_env(), stdout=fh, stderr=subprocess.STDOUT, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"axolotl training failed ({proc.returncode}):\n{log.read_text()[-4000:]}")
    return TrainedRun(cfg_path, Path(cfg["output_dir"]), Path(cfg["base_model"]))


def copy_run(run: TrainedRun, dest: Path) -> TrainedRun:
    """A private copy of a trained run whose config points at the copied output_dir."""
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / run.output_dir.name
    shutil.copytree(run.output_dir, out)
    cfg = yaml.safe_load(run.config.read_text())
    cfg["output_dir"] = str(out)
    cfg_path = dest / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return TrainedRun(cfg_path, out, run.base_model)


# ---------------------------------------------------------------------------------------------
# PEFT-built runs: real PEFT adapters in an axolotl-shaped output_dir, without training. Used
# where training cannot produce the case on demand (a later checkpoint that is worse, NaN
# losses, DoRA/rsLoRA variants) and to keep the fast tests fast.


def write_peft_checkpoint(base_dir: Path, ckpt: Path, *, seed: int, lora: dict | None = None,
                          eval_loss: float | None = None, step: int = 1, b_std: float = 0.05) -> Path:
    """A PEFT checkpoint whose LoRA B matrices are drawn from N(0, b_std) (PEFT's own init has B = 0: no change)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    opts = {"r": 8, "lora_alpha": 16, "target_modules": TARGETS, "lora_dropout": 0.0, **(lora or {})}
    peft_model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **opts))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or "lora_embedding_B" in name:
                p.normal_(0, b_std)
            elif "lora_magnitude_vector" in name:
                p.mul_(1 + 0.1 * torch.randn_like(p))
            elif "modules_to_save" in name:
                p.add_(0.01 * torch.randn_like(p))
    ckpt.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(ckpt))
    AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(str(ckpt))
    history = [{"step": step, "loss": 1.0}]
    if eval_loss is not None:
        history.append({"step": step, "eval_loss": eval_loss})
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": history}))
    return ckpt


def peft_run(base_dir: Path, work: Path, losses: dict[int, float | None], *, lora: dict | None = None,
             adapter: str = "lora", extra: dict | None = None) -> TrainedRun:
    """An output_dir with one PEFT checkpoint per step (distinct random weights) and a config."""
    out = work / "out" / "peft-run"
    for i, (step, loss) in enumerate(sorted(losses.items())):
        write_peft_checkpoint(base_dir, out / f"checkpoint-{step}", seed=100 + i, lora=lora, eval_loss=loss,
                              step=step)
    cfg = {"base_model": str(base_dir), "output_dir": str(out), "adapter": adapter, "lora_r": 8,
           "lora_alpha": 16, **(extra or {})}
    cfg_path = work / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return TrainedRun(cfg_path, out, base_dir)


def peft_merged_state(base_dir: Path, adapter_dir: Path, rows: int | None = None) -> dict:
    """PEFT's own merge_and_unload of the adapter, float32, as a state dict."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    if rows and base.get_input_embeddings().weight.shape[0] != rows:
        base.resize_token_embeddings(rows, mean_resizing=False)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


def load_output_tensors(out_dir: Path) -> dict:
    from safetensors.torch import load_file

    tensors: dict = {}
    for f in sorted(out_dir.glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    return tensors


def reshard(model_dir: Path, dest: Path, max_shard_size: str) -> Path:
    """Re-save a model with small shards (transformers' own sharded layout + index)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.save_pretrained(str(dest), max_shard_size=max_shard_size)
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(str(dest))
    return dest
