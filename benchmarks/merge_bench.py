"""Benchmark the streaming merge against axolotl's merge-lora and PEFT, one process each.

    .venv/bin/python benchmarks/merge_bench.py [--size-gb 1.6] [--work build/bench/merge]

Builds (once, cached) a synthetic Qwen2-shaped bf16 model of >= 1.5 GB in 3 shards and a
rank-32 LoRA adapter on all seven projections (PEFT file layout, written directly), then runs
  (a) ours:     fine-tuning/merge_adapter.py
  (b) axolotl:  python -m axolotl.cli.merge_lora cfg.yaml --lora_model_dir=DIR (memory_efficient)
  (c) PEFT:     from_pretrained + PeftModel + merge_and_unload + save_pretrained
each in a fresh child, measuring wall time and whole-process-tree peak RSS, prints the ratios
(S = largest base shard + adapter) and checks that (a) and (b) are bit-identical to (c).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import psutil

from quantummind.paths import BUILD_DIR, REPO_ROOT, offline_env

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK, ALPHA = 32, 64

PEFT_SCRIPT = r"""
import sys, torch
from transformers import AutoModelForCausalLM
from peft import PeftModel
base, adapter, out = sys.argv[1:4]
model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
model.save_pretrained(out, max_shard_size="5GB")
"""


def build_inputs(work: Path, size_gb: float) -> dict:
    """Synthetic base + adapter + axolotl-shaped run dir + config, cached in `work`."""
    import torch
    from safetensors.torch import save_file

    from quantummind.tiny_model import build_synthetic_model

    stamp = work / "inputs.json"
    if stamp.is_file():
        info = json.loads(stamp.read_text())
        if info.get("size_gb") == size_gb:
            return info
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    synth = build_synthetic_model(work / "base", size_gb=size_gb, num_shards=3, dtype="bfloat16")
    config = json.loads((synth.path / "config.json").read_text())
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    hd = config.get("head_dim") or h // config["num_attention_heads"]
    q_out, kv_out = config["num_attention_heads"] * hd, config["num_key_value_heads"] * hd
    dims = {"q_proj": (h, q_out), "k_proj": (h, kv_out), "v_proj": (h, kv_out), "o_proj": (q_out, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
    ckpt = work / "run" / "bench-run" / "checkpoint-1"
    ckpt.mkdir(parents=True)
    gen = torch.Generator().manual_seed(1)
    tensors = {}
    for layer in range(layers):
        for proj, (fan_in, fan_out) in dims.items():
            part = "self_attn" if proj in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            key = f"base_model.model.model.layers.{layer}.{part}.{proj}"
            tensors[f"{key}.lora_A.weight"] = (torch.randn(RANK, fan_in, generator=gen) / math.sqrt(fan_in)).to(torch.bfloat16)
            tensors[f"{key}.lora_B.weight"] = (torch.randn(fan_out, RANK, generator=gen) * 0.01).to(torch.bfloat16)
    save_file(tensors, str(ckpt / "adapter_model.safetensors"), metadata={"format": "pt"})
    del tensors
    (ckpt / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": RANK, "lora_alpha": ALPHA, "lora_dropout": 0.0,
        "target_modules": TARGETS, "bias": "none", "fan_in_fan_out": False, "use_rslora": False,
        "use_dora": False, "base_model_name_or_path": str(synth.path), "inference_mode": True,
    }, indent=2))
    (ckpt / "trainer_state.json").write_text(json.dumps(
        {"global_step": 1, "log_history": [{"step": 1, "eval_loss": 1.0}]}))
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (synth.path / f).is_file():
            shutil.copy2(synth.path / f, ckpt / f)
    data = work / "train.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n")
    cfg = {
        "base_model": str(synth.path), "output_dir": str(work / "run" / "bench-run"), "adapter": "lora",
        "lora_r": RANK, "lora_alpha": ALPHA, "lora_dropout": 0.0, "lora_target_modules": TARGETS,
        "bf16": True, "fp16": False, "flash_attention": False, "lora_mlp_kernel": False,
        "datasets": [{"path": str(data), "ds_type": "json", "type": "chat_template"}],
        "micro_batch_size": 1, "num_epochs": 1, "sequence_len": 256, "learning_rate": 1e-4,
    }
    import yaml

    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    info = {
        "size_gb": size_gb, "base": str(synth.path), "checkpoint": str(ckpt), "config": str(work / "config.yaml"),
        "num_parameters": synth.num_parameters, "num_shards": synth.num_shards,
        "largest_shard_bytes": synth.largest_shard_bytes,
        "adapter_bytes": (ckpt / "adapter_model.safetensors").stat().st_size,
    }
    stamp.write_text(json.dumps(info, indent=2))
    return info


def measure(cmd: list[str], cwd: Path) -> dict:
    """Run `cmd` in a fresh wrapper process; peak RSS of the whole tree (sampled sum and the
    kernel's max RSS of any one waited-for descendant), wall seconds, exit code."""
    wrapper = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.perf_counter(); rc = subprocess.call(sys.argv[1:]); wall = time.perf_counter() - t\n"
        "print(json.dumps({'rc': rc, 'wall': wall, "
        "'maxrss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", wrapper, *cmd], cwd=cwd, env=offline_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                procs = [p for p in root.children(recursive=True)]
                total = sum(p.memory_info().rss for p in procs)
                peak = max(peak, total)
            except psutil.Error:
                pass
            stop.wait(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    out, err = proc.communicate()
    stop.set()
    thread.join()
    lines = [line for line in out.strip().splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{cmd[:3]} failed:\n{err[-3000:]}")
    res = json.loads(lines[-1])
    if res["rc"] != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:4]))} exited {res['rc']}:\n{err[-3000:]}")
    return {"wall_s": res["wall"], "peak_rss_bytes": max(peak, res["maxrss"]), "sampled_tree_rss": peak,
            "maxrss": res["maxrss"]}


def tensors_identical(dir_a: Path, dir_b: Path) -> tuple[bool, str]:
    """Compare two checkpoints tensor by tensor (bitwise), one tensor in memory at a time."""
    import torch

    from quantummind.merge.merge import open_base
    from quantummind.merge.shards import SafetensorsReader

    def index(d: Path) -> dict[str, Path]:
        return {name: shard for name, (shard, _) in open_base(d).infos.items()}

    ia, ib = index(dir_a), index(dir_b)
    if set(ia) != set(ib):
        return False, f"tensor names differ: {sorted(set(ia) ^ set(ib))[:5]}"
    readers: dict[Path, SafetensorsReader] = {}
    try:
        for name in sorted(ia):
            ra = readers.setdefault(ia[name], SafetensorsReader(ia[name]))
            rb = readers.setdefault(ib[name], SafetensorsReader(ib[name]))
            a, b = ra.get(name), rb.get(name)
            if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a.view(torch.uint8), b.view(torch.uint8)):
                return False, f"{name} differs"
    finally:
        for r in readers.values():
            r.close()
    return True, f"{len(ia)} tensors bit-identical"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gb", type=float, default=1.6, help="synthetic base size (default 1.6)")
    ap.add_argument("--work", type=Path, default=BUILD_DIR / "bench" / "merge", help="cache/work directory")
    ap.add_argument("--skip", nargs="*", default=[], choices=["ours", "axolotl", "peft"], help="runs to skip")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    info = build_inputs(args.work, args.size_gb)
    work = args.work
    S = info["largest_shard_bytes"] + info["adapter_bytes"]
    outs = {name: work / f"out-{name}" for name in ("ours", "axolotl", "peft")}
    for d in outs.values():
        shutil.rmtree(d, ignore_errors=True)
    ax_cfg = work / "config-axolotl.yaml"
    import yaml

    cfg = yaml.safe_load(Path(info["config"]).read_text())
    cfg["output_dir"] = str(outs["axolotl"])
    ax_cfg.write_text(yaml.safe_dump(cfg, sort_keys=False))
    commands = {
        "ours": [sys.executable, str(REPO_ROOT / "fine-tuning" / "merge_adapter.py"), info["config"],
                 "--checkpoint", info["checkpoint"], "--output", str(outs["ours"]), "--dtype", "bfloat16",
                 "--force", "-q"],
        "axolotl": [sys.executable, "-m", "axolotl.cli.merge_lora", str(ax_cfg),
                    f"--lora_model_dir={info['checkpoint']}"],
        "peft": [sys.executable, "-c", PEFT_SCRIPT, info["base"], info["checkpoint"], str(outs["peft"])],
    }
    results: dict[str, dict] = {}
    for name, cmd in commands.items():
        if name in args.skip:
            continue
        print(f"running {name} ...", flush=True)
        os.sync()  # flush the previous run's (or the cleanup's) dirty pages so no run pays for another's
        results[name] = measure(cmd, REPO_ROOT)
    if "axolotl" in results:
        outs["axolotl"] = outs["axolotl"] / "merged"

    mib = 2**20
    print(f"\nbase: {info['num_parameters'] / 1e6:.0f}M params bf16, {info['num_shards']} shards, largest "
          f"{info['largest_shard_bytes'] / mib:.0f} MiB; adapter rank {RANK} on 7 projections "
          f"{info['adapter_bytes'] / mib:.0f} MiB; S = {S / mib:.0f} MiB; {os.cpu_count()} CPUs")
    print(f"{'run':<10}{'wall s':>9}{'peak RSS MiB':>15}{'RSS / S':>9}")
    for name, r in results.items():
        print(f"{name:<10}{r['wall_s']:>9.1f}{r['peak_rss_bytes'] / mib:>15.0f}{r['peak_rss_bytes'] / S:>9.2f}")
    summary: dict = {"inputs": info, "S_bytes": S, "results": results}
    if "ours" in results and "axolotl" in results:
        summary["wall_ours_over_axolotl"] = results["ours"]["wall_s"] / results["axolotl"]["wall_s"]
        summary["rss_ours_over_axolotl"] = results["ours"]["peak_rss_bytes"] / results["axolotl"]["peak_rss_bytes"]
        print(f"ours / axolotl: wall {summary['wall_ours_over_axolotl']:.2f}x (goal <= 0.5), "
              f"peak RSS {summary['rss_ours_over_axolotl']:.2f}x")
    if "ours" in results and "peft" in results:
        summary["wall_ours_over_peft"] = results["ours"]["wall_s"] / results["peft"]["wall_s"]
        print(f"ours / peft: wall {summary['wall_ours_over_peft']:.2f}x, peak RSS "
              f"{results['ours']['peak_rss_bytes'] / results['peft']['peak_rss_bytes']:.2f}x")
    if "ours" in results:
        summary["rss_ours_over_S"] = results["ours"]["peak_rss_bytes"] / S
        print(f"ours peak RSS / S = {summary['rss_ours_over_S']:.2f} (goal <= 1.25)")
    if "peft" in results:
        for name in ("ours", "axolotl"):
            if name in results:
                same, detail = tensors_identical(outs[name], outs["peft"])
                summary[f"{name}_identical_to_peft"] = same
                print(f"{name} vs peft: {'IDENTICAL' if same else 'DIFFERENT'} ({detail})")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
