"""`--check-served`: does vLLM serving the merged folder write what it writes serving the adapter on the base?

Both are served in turn through `serve_vllm.sh` (the merged folder; then the base model with the chosen
checkpoint as a LoRA module), greedy-decode the same K evaluation prompts through the OpenAI endpoint, and
their generated token ids are compared prompt by prompt: the agreed prefix, the first divergence, the
agreement (agreed prefix / the longer of the two). For a 16-bit LoRA the two must agree within a tolerance;
for QLoRA they differ by design (docs/merge.md) and the figures are reported, not enforced.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from quantummind.merge.errors import MergeError

logger = logging.getLogger(__name__)

# mean token agreement below 1 - tolerance fails the check; by merged dtype (float32: rounding alone
# flips a greedy choice only at a near-tie; 16-bit formats round the sum W + BA differently than BA added on the fly)
DEFAULT_TOLERANCE = {"float32": 0.02, "bfloat16": 0.25, "float16": 0.25}


@dataclass(frozen=True)
class CheckOptions:
    prompts: int = 8
    max_tokens: int = 64
    tolerance: float | None = None  # None: DEFAULT_TOLERANCE of the merged dtype
    max_len: int = 1024
    serve_timeout_s: int = 600


@dataclass(frozen=True)
class PromptAgreement:
    id: str
    merged_tokens: int
    served_tokens: int
    agreed_prefix: int
    agreement: float  # agreed_prefix / the longer sequence (1.0 when both are empty)
    first_divergence: int | None  # index of the first differing token; None when the two are identical

    @staticmethod
    def of(prompt_id: str, merged: list[int], served: list[int]) -> "PromptAgreement":
        prefix = 0
        for a, b in zip(merged, served):
            if a != b:
                break
            prefix += 1
        longest = max(len(merged), len(served))
        same = merged == served
        return PromptAgreement(prompt_id, len(merged), len(served), prefix, 1.0 if longest == 0 else prefix / longest,
                               None if same else prefix)


@dataclass
class ServedCheck:
    mode: str  # "lora" (enforced) | "qlora" (reported: they differ by design)
    tolerance: float
    per_prompt: list[PromptAgreement]
    options: CheckOptions
    seconds: float

    @property
    def mean_agreement(self) -> float:
        return sum(p.agreement for p in self.per_prompt) / len(self.per_prompt)

    @property
    def identical(self) -> int:
        return sum(p.first_divergence is None for p in self.per_prompt)

    @property
    def within_tolerance(self) -> bool:
        return self.mean_agreement >= 1.0 - self.tolerance

    @property
    def enforced(self) -> bool:
        return self.mode == "lora"

    @property
    def failed(self) -> bool:
        return self.enforced and not self.within_tolerance

    def to_json(self) -> dict:
        return {"mode": self.mode, "enforced": self.enforced, "tolerance": self.tolerance,
                "passed": self.within_tolerance if self.enforced else None,
                "within_tolerance": self.within_tolerance, "mean_agreement": round(self.mean_agreement, 4),
                "identical_prompts": self.identical, "prompts": len(self.per_prompt),
                "max_tokens": self.options.max_tokens,
                "per_prompt": [asdict(p) | {"agreement": round(p.agreement, 4)} for p in self.per_prompt],
                "seconds": round(self.seconds, 1)}


def describe(check: dict) -> str:
    """One line for a `check_served` entry of merge_report.json (ServedCheck.to_json)."""
    first = [p["first_divergence"] for p in check["per_prompt"] if p["first_divergence"] is not None]
    verdict = "QLoRA: reported, not enforced" if not check["enforced"] else "passed" if check["passed"] else "FAILED"
    return (f"check-served: {check['identical_prompts']}/{check['prompts']} prompts identical, mean token agreement "
            f"{check['mean_agreement']:.3f}{f', first divergence at token {min(first)}' if first else ''} "
            f"(tolerance {check['tolerance']:g}; {verdict})")


def require_servable(adapter_dir: Path) -> None:
    """MergeError when vLLM cannot serve the adapter as a LoRA module, so the check cannot run."""
    from quantummind.merge.judge_select import servable

    servable(adapter_dir, why="--check-served serves it as a LoRA module",
             remedy="merge without --check-served (a run that adds tokens needs lora_modules_to_save)")


def _greedy_token_ids(base_url: str, model: str, prompts: list, max_tokens: int) -> dict[str, list[int]]:
    """Each prompt's greedily decoded token ids, as vLLM reports them (`return_tokens_as_token_ids`)."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="EMPTY", max_retries=2, timeout=600)
    out: dict[str, list[int]] = {}
    for spec in prompts:
        resp = client.chat.completions.create(
            model=model, messages=spec.messages, temperature=0.0, max_tokens=max_tokens, logprobs=True,
            extra_body={"return_tokens_as_token_ids": True})
        content = resp.choices[0].logprobs.content if resp.choices[0].logprobs else []
        out[spec.id] = [int(t.token.removeprefix("token_id:")) for t in content or []]
    return out


def _serve_and_decode(model_dir: Path, name: str, run_dir: Path, prompts: list, o: CheckOptions,
                      adapter: Path | None = None) -> dict[str, list[int]]:
    """Serve `model_dir` (with `adapter` as the LoRA module "adapter" when given) and greedy-decode `prompts`."""
    from quantummind.serving import ServerStartError, served

    try:
        with served(model_dir, name, run_dir, adapters={"adapter": adapter} if adapter else None, max_len=o.max_len,
                    timeout_s=o.serve_timeout_s) as server:
            return _greedy_token_ids(server.base_url, "adapter" if adapter else name, prompts, o.max_tokens)
    except ServerStartError as exc:
        raise MergeError(f"--check-served: the vLLM server for {name} did not start: {exc} (log in {run_dir})") from None


def check_served(merged_dir: Path, base_dir: Path, adapter_dir: Path, run_dir: Path, *, qlora: bool,
                 dtype: str, options: CheckOptions | None = None) -> ServedCheck:
    """Serve the merged folder, then the base with `adapter_dir` as a LoRA module; compare greedy token ids."""
    from evaluation.prompts import build_prompts

    o = options or CheckOptions()
    if o.prompts < 1 or o.max_tokens < 1:
        raise MergeError("--check-prompts and --check-max-tokens must be >= 1")
    require_servable(adapter_dir)
    t0 = time.perf_counter()
    prompts = build_prompts(o.prompts)
    run_dir.mkdir(parents=True, exist_ok=True)
    merged = _serve_and_decode(merged_dir, "merged", run_dir, prompts, o)
    served = _serve_and_decode(base_dir, "base", run_dir, prompts, o, adapter=adapter_dir)
    tolerance = o.tolerance if o.tolerance is not None else DEFAULT_TOLERANCE.get(dtype, 0.25)
    check = ServedCheck("qlora" if qlora else "lora", tolerance,
                        [PromptAgreement.of(p.id, merged[p.id], served[p.id]) for p in prompts], o,
                        time.perf_counter() - t0)
    logger.debug("%s", describe(check.to_json()))
    return check
