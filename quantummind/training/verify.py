"""`train.py verify`: the seed's Action 5 with a real judge. Load base + best adapter, generate for
the seed's XY-chain prompt, and score the reply with the evaluation package's verifier."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

HAMILTONIAN, NUM_QUBITS, CONSTRAINT = "xy_chain", 4, ""  # the seed's verify prompt


@dataclass
class VerifyResult:
    checkpoint: Path
    eval_loss: float | None
    prompt: str
    reply: str
    score: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.score.get("syntax_valid") and self.score.get("verification_pass"))

    def verdict(self) -> str:
        s = self.score
        parts = [f"syntax_valid={s.get('syntax_valid')}", f"verification_pass={s.get('verification_pass')}",
                 f"bp_free={s.get('bp_free')}"]
        if s.get("error"):
            parts.append(f"error={str(s['error'])[:200]}")
        head = "PASS: the fine-tuned model writes a verified circuit" if self.passed else \
            "FAIL: the reply is not a verified circuit"
        return f"{head} ({', '.join(parts)})"


def resolve_checkpoint(output_dir: Path, which: str) -> tuple[Path, float | None]:
    """best (lowest eval_loss), last, or a checkpoint directory: the merge's own choice."""
    from quantummind.merge import MergeError, select_checkpoint

    try:
        choice = select_checkpoint(output_dir, which)
    except MergeError as exc:
        raise FileNotFoundError(str(exc)) from None
    return Path(choice.path), choice.eval_loss


def generate_reply(base_model: str, adapter_dir: Path, messages: list[dict[str, str]], *,
                   max_new_tokens: int, temperature: float, seed: int) -> str:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    on_gpu = torch.cuda.is_available()
    tok_dir = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_model
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    model = AutoModelForCausalLM.from_pretrained(
        base_model, dtype=torch.bfloat16 if on_gpu else torch.float32,
        device_map="auto" if on_gpu else None)
    if len(tokenizer) != model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True).to(model.device)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                             temperature=temperature if temperature > 0 else None,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def verify(cfg: dict[str, Any], *, checkpoint: str = "best", max_new_tokens: int = 512,
           temperature: float = 0.7, seed: int = 0) -> VerifyResult:
    from evaluation.prompts import chat_messages, user_prompt
    from evaluation.scoring import score_replies
    from quantummind.training.config import output_dir

    adapter, eval_loss = resolve_checkpoint(output_dir(cfg), checkpoint)
    prompt = user_prompt(HAMILTONIAN, NUM_QUBITS, CONSTRAINT)
    reply = generate_reply(str(cfg["base_model"]), adapter, chat_messages(prompt),
                           max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    score = score_replies([{"id": "verify", "hamiltonian": HAMILTONIAN, "num_qubits": NUM_QUBITS,
                            "constraint": CONSTRAINT, "prompt": prompt, "reply": reply}])[0]
    return VerifyResult(adapter, eval_loss, prompt, reply, score)
