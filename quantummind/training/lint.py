"""Preflight checks for an axolotl config: the seed's lessons, caught before a GPU hour is spent.

Offline (no model download); it imports axolotl's config schema to know every key it accepts. Errors
are things that will crash or silently ruin the run; warnings are things a user should know about but
may mean.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from quantummind.training.config import output_dir
from quantummind.training.memory import GpuInfo, MemoryEstimate, estimate_memory, shape_for, visible_gpu
from quantummind.training.tokenizer_info import tokenizer_info

ERROR, WARNING, INFO = "error", "warning", "info"
_DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".arrow", ".txt")


@dataclass(frozen=True)
class Finding:
    level: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: [{self.code}] {self.message}"


@dataclass
class LintReport:
    findings: list[Finding] = field(default_factory=list)
    memory: MemoryEstimate | None = None
    gpu: GpuInfo | None = None
    device: str = ""  # "cpu" or "gpu": what the config was linted for (resolve_device)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == WARNING]

    def codes(self, level: str | None = None) -> set[str]:
        return {f.code for f in self.findings if level is None or f.level == level}

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0


def _add(report: LintReport, level: str, code: str, message: str) -> None:
    report.findings.append(Finding(level, code, message))


def check_tokens(cfg: dict[str, Any], report: LintReport) -> None:
    info = tokenizer_info(cfg)
    special = cfg.get("special_tokens") or {}
    if "unk_token" in special and info.byte_level:
        _add(report, ERROR, "unk_token",
             f"special_tokens.unk_token={special['unk_token']!r} on a byte-level BPE tokenizer "
             f"({info.family or 'byte-level'}, from {info.source}): every byte is already a token, so "
             "no unk_token is needed, and adding one grows the vocabulary by one row (the seed's "
             "Llama 3.1 run went 128256 -> 128257 and broke the merge). Remove unk_token.")
    added = [str(t) for t in (cfg.get("tokens") or [])]
    for name, tok in special.items():
        if name == "unk_token" and info.byte_level:
            continue  # already an error above
        if info.has_token(str(tok)) is not True:
            added.append(str(tok))
    if not added:
        return
    to_save = set(cfg.get("lora_modules_to_save") or [])
    if cfg.get("adapter") in ("lora", "qlora") and not {"embed_tokens", "lm_head"} <= to_save:
        _add(report, ERROR, "modules_to_save",
             f"config adds tokens {added} but lora_modules_to_save does not contain both embed_tokens "
             "and lm_head: the new rows would stay random and untrained (axolotl only stops after "
             "loading the model). Add `lora_modules_to_save: [embed_tokens, lm_head]` or drop the tokens.")
    else:
        _add(report, WARNING, "added_tokens",
             f"config adds tokens {added}: the merged model's vocabulary grows; ship the trained "
             "tokenizer with it.")


def axolotl_keys() -> set[str]:
    """Every top-level key axolotl's config schema (its pydantic model) accepts, aliases included."""
    from axolotl.utils.schemas.config import AxolotlInputConfig

    keys: set[str] = set()
    for name, f in AxolotlInputConfig.model_fields.items():
        keys.add(name)
        for alias in (f.alias, f.validation_alias):
            if isinstance(alias, str):
                keys.add(alias)
    return keys


def check_unknown_keys(cfg: dict[str, Any], report: LintReport, known: set[str] | None = None) -> None:
    """A key axolotl's schema does not know is dropped without a word and the run trains with the
    default (`learning_rat: 1e-4` trains at axolotl's learning rate): an error, with a did-you-mean.
    With `plugins:` set, a plugin may add keys the base schema lacks: a warning then."""
    import difflib

    if known is None:
        try:
            known = axolotl_keys()
        except ImportError:
            _add(report, WARNING, "unknown_key", "axolotl is not importable here: config keys not checked "
                 "against its schema (run lint with .venv/bin/python).")
            return
    level = WARNING if cfg.get("plugins") else ERROR
    for key in cfg:
        if not isinstance(key, str) or key.startswith("_") or key in known:
            continue
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.7)
        hint = f" Did you mean {' or '.join(f'`{c}`' for c in close)}?" if close else ""
        plugin = " (or a plugin's key: plugins are set)" if cfg.get("plugins") else ""
        _add(report, level, "unknown_key",
             f"`{key}` is not an axolotl config key{plugin}: axolotl ignores it and trains with its default.{hint}")


def _eval_configured(cfg: dict[str, Any]) -> bool:
    return bool(cfg.get("test_datasets")) or float(cfg.get("val_set_size") or 0) > 0


def check_validation(cfg: dict[str, Any], report: LintReport) -> None:
    if not _eval_configured(cfg):
        _add(report, WARNING, "no_validation",
             "no validation set (test_datasets or val_set_size): checkpoints carry no eval_loss, so the "
             "merge cannot pick the best one (seed 004: the last checkpoint was not the best).")
        return
    if str(cfg.get("eval_strategy") or "steps") == "no":
        _add(report, WARNING, "no_validation", "eval_strategy is 'no': checkpoints will carry no eval_loss.")
        return
    save, ev = cfg.get("save_steps"), cfg.get("eval_steps")
    if isinstance(save, int) and isinstance(ev, int) and ev > 0 and save % ev != 0:
        _add(report, ERROR, "save_eval_steps",
             f"save_steps={save} is not a multiple of eval_steps={ev}: checkpoints saved between "
             "evaluations have no eval_loss of their own, so best-checkpoint selection is wrong. "
             f"Use save_steps={ev * max(1, round(save / ev))}.")
    spe, epe = cfg.get("saves_per_epoch"), cfg.get("evals_per_epoch")
    if isinstance(spe, int) and isinstance(epe, int) and spe > 0 and epe % spe != 0:
        _add(report, ERROR, "save_eval_steps",
             f"evals_per_epoch={epe} is not a multiple of saves_per_epoch={spe}: some checkpoints "
             "would have no eval_loss of their own.")
    limit = cfg.get("save_total_limit")
    if limit and not cfg.get("load_best_model_at_end"):
        _add(report, WARNING, "checkpoint_rotation",
             f"save_total_limit={limit} without load_best_model_at_end: rotation can delete the best "
             "checkpoint before the merge sees it. Set load_best_model_at_end: true and "
             "metric_for_best_model: eval_loss to protect it.")


# The dataset columns each of our reward functions reads (besides `prompt`), by fully qualified name.
REWARD_COLUMNS = {"quantummind.rewards.circuit_reward": ("hamiltonian", "num_qubits"),
                  "quantummind.rewards.unit_test_reward": ("test", "entry_point")}


def is_grpo(cfg: dict[str, Any]) -> bool:
    return str(cfg.get("rl") or "").lower() == "grpo"


def _load_reward(name: str) -> tuple[Any, str | None]:
    """(the function, None) or (None, why it cannot be used), as axolotl's GRPOStrategy loads it."""
    import importlib
    import inspect

    module_name, _, attr = name.rpartition(".")
    if not module_name:
        return None, "not a fully qualified name (package.module.function)"
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        return None, f"cannot be imported ({type(exc).__name__}: {exc})"
    if not callable(fn):
        return None, "is not callable"
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return fn, None
    if sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params) < 2:
        return None, "takes fewer than two parameters (TRL calls fn(prompts, completions, **columns))"
    return fn, None


def _first_row(cfg: dict[str, Any]) -> tuple[Path, dict[str, Any]] | None:
    for entry in cfg.get("datasets") or []:
        path = Path(str(entry.get("path") or "")) if isinstance(entry, dict) else None
        if path and path.is_file() and path.suffix == ".jsonl":
            with path.open(encoding="utf-8") as fh:
                line = fh.readline()
            try:
                return path, json.loads(line)
            except ValueError:
                return None
    return None


def _vllm_reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    import urllib.error
    import urllib.request

    host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health/", timeout=timeout) as resp:  # noqa: S310
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def check_grpo(cfg: dict[str, Any], report: LintReport, world_size: int = 1) -> None:
    """`rl: grpo`: reward functions importable, the columns they read present, the generation batch a
    multiple of num_generations, a vLLM server reachable in server mode."""
    trl = cfg.get("trl") or {}
    funcs = trl.get("reward_funcs") or []
    if not funcs:
        _add(report, ERROR, "grpo_reward", "rl: grpo without trl.reward_funcs: nothing to reward "
             "(e.g. reward_funcs: [quantummind.rewards.circuit_reward]).")
    weights = trl.get("reward_weights")
    if weights is not None and len(weights) != len(funcs):
        _add(report, ERROR, "grpo_reward", f"trl.reward_weights has {len(weights)} values for {len(funcs)} "
             "reward functions.")
    row = _first_row(cfg)
    for name in funcs:
        _, why = _load_reward(str(name))
        if why:
            _add(report, ERROR, "grpo_reward", f"reward function {name}: {why}.")
            continue
        missing = [c for c in ("prompt", *REWARD_COLUMNS.get(str(name), ())) if row and c not in row[1]]
        if missing:
            _add(report, ERROR, "grpo_dataset", f"{row[0]} lacks column(s) {', '.join(missing)} that {name} "
                 "reads (write RL prompts with `python fine-tuning/prepare_dataset.py --rl --out DIR`).")
    num_gen = int(trl.get("num_generations") or 8)  # TRL's default
    if num_gen < 2:
        _add(report, ERROR, "grpo_generations", f"trl.num_generations={num_gen}: GRPO compares each completion "
             "with its group; it needs at least 2.")
    mbs, gas = int(cfg.get("micro_batch_size") or 1), int(cfg.get("gradient_accumulation_steps") or 1)
    gen_batch = int(trl.get("generation_batch_size") or mbs * gas * world_size)
    if num_gen >= 2 and gen_batch % num_gen:
        _add(report, ERROR, "grpo_generation_batch",
             f"generation batch {gen_batch} (trl.generation_batch_size, else micro_batch_size x "
             f"gradient_accumulation_steps x processes = {mbs} x {gas} x {world_size}) is not a multiple of "
             f"num_generations={num_gen}: TRL refuses it. Use a multiple, e.g. {num_gen * max(1, gen_batch // num_gen)}.")
    if trl.get("use_vllm") and str(trl.get("vllm_mode") or "server") == "server":
        vllm = cfg.get("vllm") or {}
        host = str(trl.get("vllm_server_host") or vllm.get("host") or "0.0.0.0")
        port = int(trl.get("vllm_server_port") or vllm.get("port") or 8000)
        if not _vllm_reachable(host, port):
            _add(report, ERROR, "grpo_vllm_server",
                 f"trl.use_vllm in server mode, but no vLLM server answers at {host}:{port}/health/: start it "
                 "first in another shell with `axolotl vllm-serve CONFIG` (docs/configs.md, GRPO), on its own GPU.")
    if report.codes(ERROR) & {"grpo_reward"}:
        return
    _add(report, INFO, "grpo", f"GRPO: {', '.join(map(str, funcs))}; {num_gen} completions per prompt, "
         f"generation batch {gen_batch}; checkpoints carry no eval_loss: merge with --select-by reward.")


def _dataset_is_local(entry: dict[str, Any]) -> bool:
    path = str(entry.get("path") or "")
    return bool(entry.get("ds_type") or entry.get("data_files")) or path.endswith(_DATA_SUFFIXES) \
        or Path(path).is_absolute() or path.startswith(".")


def check_data_and_paths(cfg: dict[str, Any], report: LintReport) -> None:
    for key in ("datasets", "test_datasets"):
        for entry in cfg.get(key) or []:
            if not isinstance(entry, dict) or not entry.get("path"):
                continue
            path = Path(str(entry["path"]))
            if _dataset_is_local(entry):
                if not path.exists():
                    _add(report, ERROR, "missing_dataset",
                         f"{key} file not found: {path} (generate it with "
                         "`python fine-tuning/prepare_dataset.py --out DIR`).")
                elif path.is_file() and path.stat().st_size == 0:
                    _add(report, ERROR, "missing_dataset", f"{key} file is empty: {path}")
            else:
                _add(report, WARNING, "hub_dataset",
                     f"{key} entry {path} is not a local file: axolotl will fetch it from the hub.")
    base = str(cfg.get("base_model") or "")
    if not base:
        _add(report, ERROR, "base_model", "base_model is not set.")
    elif Path(base).is_absolute() and not (Path(base) / "config.json").is_file():
        what = "does not exist" if not Path(base).exists() else "has no config.json"
        _add(report, ERROR, "base_model",
             f"base_model {base} is a local path that {what} (tiny model: "
             "`python fine-tuning/build_tiny_model.py`).")
    elif not Path(base).is_absolute():
        check_hub_base_model(base, report)
    out = output_dir(cfg)
    if out.is_dir() and any(out.glob("checkpoint-*")):
        resuming = cfg.get("resume_from_checkpoint") or cfg.get("auto_resume_from_checkpoints")
        level = WARNING if resuming else ERROR
        _add(report, level, "output_dir_has_checkpoints",
             f"output_dir {out} already holds checkpoints: a new run mixes its checkpoints with the "
             "old ones and best-checkpoint selection compares across runs. Use a new output_dir, "
             "remove the old checkpoints, or set auto_resume_from_checkpoints: true to continue.")
    if not cfg.get("dataset_prepared_path"):
        _add(report, WARNING, "dataset_prepared_path",
             "dataset_prepared_path not set: axolotl writes ./last_run_prepared into the current directory.")


def _offline() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_hub_base_model(base: str, report: LintReport) -> None:
    """`base` is not a local directory (relative to the working directory): a hub id. Not in the
    local HF cache, it is downloaded at launch (a warning, which also names the local reading); an
    error when it cannot be a hub id either."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError

    try:
        cached = isinstance(try_to_load_from_cache(base, "config.json"), str)
    except HFValidationError:
        _add(report, ERROR, "base_model", f"base_model {base!r} is neither a local directory (from {Path.cwd()}) "
             "nor a valid hub id.")
        return
    if cached:
        return
    local_hint = f" (If it is meant as a local directory: there is none at {Path.cwd() / base}.)"
    where = ("the hub is off here (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE): download it where the run happens"
             if _offline() else "axolotl will download it from the hub")
    _add(report, WARNING, "base_model", f"base_model {base!r} is not a local directory and not in the local HF "
         f"cache: {where}." + local_hint)


def _cpu_has_avx512_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def check_cpu_keys(cfg: dict[str, Any], report: LintReport) -> None:
    """Only on a host without a visible GPU: the keys that make axolotl train on a CPU."""
    kernels = ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel")
    if cfg.get("adapter") in ("lora", "qlora") and not any(cfg.get(k) is False for k in kernels):
        _add(report, ERROR, "cpu_lora_kernel",
             "no GPU visible and no lora_*_kernel set to false: axolotl auto-enables its Triton LoRA "
             "kernels and dies with 'Torch not compiled with CUDA enabled'. Set lora_mlp_kernel: false "
             "(and lora_qkv_kernel / lora_o_kernel).")
    if cfg.get("fp16") is not False:
        _add(report, ERROR, "cpu_precision",
             f"no GPU visible and fp16 is {cfg.get('fp16')!r}: axolotl picks fp16 when it is not "
             "set to false, and fp16 mixed precision needs a GPU. Set bf16: false and fp16: false.")
    if cfg.get("bf16") not in (False, None):
        _add(report, WARNING, "cpu_precision",
             f"no GPU visible and bf16 is {cfg.get('bf16')!r}: CPU bf16 autocast is slow or unsupported; "
             "set bf16: false.")
    if cfg.get("flash_attention") or str(cfg.get("attn_implementation") or "").startswith("flash"):
        _add(report, ERROR, "cpu_flash_attention",
             "no GPU visible and flash attention requested: set flash_attention: false (SDPA is used).")
    if cfg.get("sample_packing"):
        _add(report, WARNING, "cpu_sample_packing",
             "sample_packing on a CPU costs ~40 s of sampler start-up; set sample_packing: false.")
    opt = str(cfg.get("optimizer") or "")
    if "bnb" in opt or "8bit" in opt:
        _add(report, WARNING, "cpu_optimizer", f"optimizer {opt} is a GPU optimizer; use adamw_torch on a CPU.")
    if cfg.get("adapter") == "qlora" and _eval_configured(cfg) and _cpu_has_avx512_bf16():
        _add(report, WARNING, "cpu_qlora_avx512bf16",
             "QLoRA with evaluation on a CPU with AVX512-BF16: bitsandbytes repacks 4-bit weights at the "
             "first eval and the next training step fails ('a view of a leaf Variable...'). "
             "`python fine-tuning/train.py train` applies the workaround; plain accelerate launch does not.")


def check_memory(cfg: dict[str, Any], report: LintReport, gpu: GpuInfo | None) -> None:
    shape = shape_for(str(cfg.get("base_model") or ""))
    if shape is None:
        _add(report, INFO, "gpu_memory",
             f"no shape known for base_model {cfg.get('base_model')!r} (not a local dir, not in the "
             "built-in table): GPU memory not estimated.")
        return
    est = estimate_memory(cfg, shape)
    report.memory = est
    summary = (f"estimated peak GPU memory {est.total_gib:.1f} GiB per process "
               f"(base weights {est.base_weights_gib}, LoRA+grads+optimizer "
               f"{est.lora_weights_gib + est.gradients_gib + est.optimizer_gib:.2f}, activations "
               f"{est.activations_gib}, logits {est.logits_gib}, overhead {est.overhead_gib}; "
               f"{est.num_parameters / 1e9:.2f}B params, {est.trainable_parameters / 1e6:.1f}M trainable)")
    if gpu is None:
        _add(report, INFO, "gpu_memory", summary + "; no GPU visible, so not compared.")
    elif est.total_gib > gpu.total_gib:
        sharded = cfg.get("fsdp_config") or cfg.get("deepspeed")
        _add(report, WARNING if sharded else ERROR, "gpu_memory",
             summary + f" exceeds {gpu.name} ({gpu.total_gib} GiB): lower micro_batch_size or "
             "sequence_len (raise gradient_accumulation_steps to keep the effective batch), enable "
             "gradient_checkpointing, or shard (docs/scaling-out.md)."
             + (" Sharding is configured, so the per-GPU share is smaller." if sharded else ""))
    elif est.total_gib > 0.9 * gpu.total_gib:
        _add(report, WARNING, "gpu_memory", summary + f": within 10% of {gpu.name} ({gpu.total_gib} GiB).")
    else:
        _add(report, INFO, "gpu_memory", summary + f"; fits {gpu.name} ({gpu.total_gib} GiB).")


def gpu_markers(cfg: dict[str, Any]) -> list[str]:
    """Keys that only make sense on a GPU: a config carrying them is a GPU config. 4-/8-bit loading is not one:
    QLoRA trains on the CPU too (bitsandbytes' CPU backend; the wrapper's cpu_qlora_launch)."""
    marks = [k for k in ("bf16", "fp16", "tf32", "flash_attention") if cfg.get(k) not in (None, False, "false")]
    if str(cfg.get("attn_implementation") or "").startswith("flash"):
        marks.append("attn_implementation")
    if cfg.get("deepspeed") or cfg.get("fsdp_config"):
        marks.append("deepspeed/fsdp_config")
    return marks


def lint_config(cfg: dict[str, Any], *, gpu: GpuInfo | None | Callable[[], GpuInfo | None] = visible_gpu,
                device: str = "auto") -> LintReport:
    """Run every check on a config loaded with `load_config` (paths already absolute).

    device: "cpu" (the run happens here, on the CPU: CPU keys are checked), "gpu" (skip them),
    or "auto": a visible GPU means gpu; otherwise a config with GPU-only keys is linted as a GPU
    config prepared on a CPU host, and any other config as a CPU run.
    """
    gpu_info = gpu() if callable(gpu) else gpu
    report = LintReport(gpu=gpu_info)
    check_unknown_keys(cfg, report)
    check_tokens(cfg, report)
    if is_grpo(cfg):
        check_grpo(cfg, report)
    else:
        check_validation(cfg, report)
    check_data_and_paths(cfg, report)
    report.device = resolve_device(cfg, gpu_info, device)
    if device == "auto" and gpu_info is None and report.device == "gpu":
        _add(report, INFO, "device",
             f"no GPU visible; linting as a GPU config ({', '.join(gpu_markers(cfg))} set), CPU checks skipped "
             "(--device cpu forces them).")
    if report.device == "cpu":
        check_cpu_keys(cfg, report)
    check_memory(cfg, report, gpu_info)
    return report


def resolve_device(cfg: dict[str, Any], gpu_info: GpuInfo | None, device: str = "auto") -> str:
    """The one device decision `lint` and `train` share: "cpu"/"gpu" as given, or for "auto" gpu when
    a GPU is visible or the config carries GPU-only keys (a GPU config prepared on a CPU host)."""
    if device in ("cpu", "gpu"):
        return device
    if device != "auto":
        raise ValueError(f"device must be auto, cpu or gpu, not {device!r}")
    return "gpu" if gpu_info is not None or gpu_markers(cfg) else "cpu"


def format_report(report: LintReport, config_path: str) -> str:
    lines = [str(f) for f in report.findings]
    verdict = (f"{config_path}: {len(report.errors)} error(s), {len(report.warnings)} warning(s)")
    return "\n".join(lines + [verdict])


def report_json(report: LintReport) -> str:
    return json.dumps({"findings": [f.__dict__ for f in report.findings],
                       "memory": report.memory.as_dict() if report.memory else None,
                       "gpu": report.gpu.__dict__ if report.gpu else None}, indent=2)
