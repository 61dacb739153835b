"""--verify: the merged model must reproduce base+adapter as PEFT runs it.

This is the one place the merge imports transformers/peft (and bitsandbytes for QLoRA runs):
it loads the trained model the way training saw it and compares next-token logits.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from quantummind.merge.settings import MergeSettings

logger = logging.getLogger(__name__)

# Max |logit difference| --verify accepts by default, per merged dtype. float32: the merge and the
# reference differ only by float32 summation order (measured <= 1e-5 on the tiny runs, docs/merge.md).
# bfloat16/float16: every merged weight is rounded once more than the float32 reference sees.
DEFAULT_TOLERANCE = {"float32": 1e-3, "bfloat16": 0.5, "float16": 0.1}

PROMPTS = [
    "Create a 4-qubit variational circuit for the Heisenberg chain Hamiltonian ground state.",
    "Write a hardware-efficient ansatz with RY rotations and CX entanglers for 6 qubits.",
    "Explain what a barren plateau is in one sentence.",
]


def load_trained_model(base_path: Path, adapter_path: Path, settings: MergeSettings, *, quantized: bool,
                       vocab_rows: int | None = None):
    """base (+4-bit NF4 as in training when `quantized`) + PEFT adapter, eval mode, on the CPU."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    kwargs: dict = {"dtype": settings.compute_dtype if quantized else torch.float32}
    if quantized:
        from quantummind.training.cpu_qlora_launch import apply_workaround

        # Training ran with the AVX512-BF16 inference repack disabled (it breaks training on
        # CPUs that have it); use the same kernels so the reference is what training saw.
        apply_workaround()
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=settings.quant_type,
            bnb_4bit_use_double_quant=settings.double_quant, bnb_4bit_compute_dtype=settings.compute_dtype,
            bnb_4bit_quant_storage=torch.bfloat16, llm_int8_skip_modules=settings.skip_modules or None,
        )
    base = AutoModelForCausalLM.from_pretrained(str(base_path), **kwargs)
    if vocab_rows and base.get_input_embeddings().weight.shape[0] != vocab_rows:
        base.resize_token_embeddings(vocab_rows, mean_resizing=False)
    model = PeftModel.from_pretrained(base, str(adapter_path))
    return model.eval()


def prompt_batches(tokenizer_dir: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    out = []
    for p in PROMPTS:
        msgs = [{"role": "user", "content": p}]
        if tok.chat_template:
            ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
            out.append(ids["input_ids"])
        else:
            out.append(tok(p, return_tensors="pt")["input_ids"])
    return out


def logits(model, batches) -> list:
    import torch

    with torch.no_grad():
        return [model(input_ids=ids).logits.float() for ids in batches]


def max_logit_diff(a: list, b: list) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def default_tolerance(dtype) -> float:
    """DEFAULT_TOLERANCE for a merged torch dtype."""
    return DEFAULT_TOLERANCE[str(dtype).replace("torch.", "")]


def verify_merge(base_path: Path, adapter_path: Path, merged_path: Path, settings: MergeSettings, *,
                 faithful: bool, tolerance: float) -> dict:
    """`faithful`: the merge was QLoRA-faithful (merge() sets it only for QLoRA runs), so the
    reference is PEFT on the 4-bit base. `passed`: max |logit diff| <= `tolerance`."""
    import torch
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(str(merged_path), dtype=torch.float32).eval()
    rows = merged.get_input_embeddings().weight.shape[0]
    batches = prompt_batches(merged_path)
    got = logits(merged, batches)
    del merged
    quantized = faithful
    ref_model = load_trained_model(base_path, adapter_path, settings, quantized=quantized, vocab_rows=rows)
    ref = logits(ref_model, batches)
    diff = max_logit_diff(got, ref)
    passed = diff <= tolerance  # NaN fails
    logger.info("verify: max |logit diff| %.3g over %d prompts (tolerance %.3g)", diff, len(batches), tolerance)
    return {"max_abs_logit_diff": diff if math.isfinite(diff) else None, "tolerance": tolerance,
            "passed": bool(passed), "prompts": len(batches),
            "reference": "peft on 4-bit base (bitsandbytes)" if quantized else "peft on full-precision base"}
