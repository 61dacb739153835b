"""Streaming LoRA merge: base shards in, merged shards out, one tensor in memory at a time.

Only torch, safetensors-format I/O (our own reader/writer), yaml and json: no transformers,
peft or axolotl import on this path (they cost ~15 s and ~0.75 GiB before any work).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import resource
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from quantummind.merge.adapter import Adapter
from quantummind.merge.checkpoints import CheckpointChoice, select_checkpoint
from quantummind.merge.errors import MergeError
from quantummind.merge.judge_select import JudgeOptions, select_by_judge
from quantummind.merge.judge_select import candidates_of as judge_candidates
from quantummind.merge.judge_select import choice_of as judge_choice
from quantummind.merge.served_check import CheckOptions, require_servable
from quantummind.merge.served_check import check_served as run_served_check
from quantummind.merge.nf4 import roundtrip_4bit
from quantummind.merge.settings import HF_DTYPES, MergeSettings, dtype_name, load_settings, resolve_base_model
from quantummind.merge.shards import (
    DTYPES, PlannedTensor, SafetensorsReader, SafetensorsWriter, parse_size, shard_names, split_into_shards,
)
from quantummind.merge.target import Input, check_output_target, check_writable
from quantummind.merge.tokenizer_files import write_tokenizer_files
from quantummind.merge.verify import default_tolerance
from quantummind.merge.vocab import MEAN_FALLBACK, read_tokenizer_json, resize_rows, tokenizer_vocab_size
from quantummind.paths import REPO_ROOT

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_ROOT = REPO_ROOT / "fine-tuning" / "merged_models"
EMBED = "model.embed_tokens.weight"
LM_HEAD = "lm_head.weight"
FROM_ADAPTER = "the adapter's trained rows (modules_to_save)"
_DECODER_LINEAR = re.compile(r"(^|\.)layers\.\d+\..+\.weight$")


@dataclass
class BaseModel:
    path: Path
    config: dict
    shards: list[Path]
    # name -> (shard, TensorInfo), in shard then file order: the output tensor order
    infos: dict[str, tuple[Path, object]] = field(default_factory=dict)

    @property
    def tied(self) -> bool:
        return LM_HEAD not in self.infos

    def shape(self, name: str) -> tuple[int, ...]:
        return self.infos[name][1].shape


@dataclass
class MergeResult:
    output: Path
    report: dict

    @property
    def check_served_failed(self) -> bool:
        """--check-served ran on a 16-bit LoRA and the served adapter and merged folder disagreed past the tolerance."""
        c = self.report.get("check_served")
        return bool(c) and c["passed"] is False

    @property
    def verify_failed(self) -> bool:
        """--verify ran and the max logit difference exceeded its tolerance."""
        return bool(self.report.get("verify")) and not self.report["verify"]["passed"]


def open_base(path: Path) -> BaseModel:
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise MergeError(f"base model {path} has no config.json")
    config = json.loads(cfg_path.read_text())
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted({path / f for f in weight_map.values()})
    elif (path / "model.safetensors").is_file():
        shards = [path / "model.safetensors"]
    else:
        raise MergeError(f"base model {path} has no safetensors weights (convert .bin checkpoints first)")
    base = BaseModel(path, config, shards)
    for shard in shards:
        with SafetensorsReader(shard) as r:
            for name in r.names():
                if name in base.infos:  # a merge would write it twice: a corrupt output
                    raise MergeError(f"base model {path}: tensor {name} is in both {base.infos[name][0].name} "
                                     f"and {shard.name}")
                base.infos[name] = (shard, r.infos[name])
    if EMBED not in base.infos:
        raise MergeError(f"base model {path} has no {EMBED}: not a supported decoder-only checkpoint")
    return base


def _output_dtype(dtype: str | None, base: BaseModel) -> torch.dtype:
    name = dtype or base.config.get("dtype") or base.config.get("torch_dtype") or "float32"
    if name not in HF_DTYPES:
        raise MergeError(f"dtype {name!r}: choose bfloat16, float16 or float32")
    return HF_DTYPES[name]


def _tokenizer_source(choice: CheckpointChoice, settings: MergeSettings, base: BaseModel,
                      warnings: list[str]) -> Path:
    for d in (choice.path, settings.output_dir):
        if (d / "tokenizer.json").is_file() or (d / "tokenizer_config.json").is_file():
            return d
    _warn(warnings, "no tokenizer saved with the run: copying the base model's")
    return base.path


def _warn(warnings: list[str], message: str) -> None:
    """A warning the user sees under -q too, and finds again in merge_report.json."""
    warnings.append(message)
    logger.warning("warning: %s", message)


@dataclass
class VocabPlan:
    base_rows: int
    rows: int
    untie: bool  # tied base whose adapter trained a separate lm_head

    @property
    def resized(self) -> bool:
        return self.rows != self.base_rows


def plan_vocab(base: BaseModel, adapter: Adapter, tok_size: int | None, allow_shrink: bool) -> VocabPlan:
    base_rows = base.shape(EMBED)[0]
    shapes = adapter.shapes()
    saved = [shapes[n][0] for n in (EMBED, LM_HEAD) if n in adapter.full]
    if EMBED in adapter.lora:
        saved.append(shapes[EMBED][0])
    if saved and len(set(saved)) > 1:
        raise MergeError(f"adapter embedding tensors disagree on vocab size: {sorted(set(saved))}")
    rows = saved[0] if saved else max(base_rows, tok_size or 0)
    if rows < base_rows and not allow_shrink:
        raise MergeError(f"trained vocab ({rows}) is smaller than the base embedding ({base_rows}); "
                         "pass --allow-vocab-shrink if that is intended")
    if tok_size and tok_size > rows:
        raise MergeError(f"trained tokenizer has {tok_size} ids but the adapter's embedding only {rows} rows")
    untie = False
    if base.tied and LM_HEAD in adapter.lora:
        untie = True
        logger.warning("tied base but the adapter has a LoRA on lm_head: writing lm_head untied")
    elif base.tied and LM_HEAD in adapter.full:
        lm = adapter.full_tensor(LM_HEAD)
        emb = adapter.full_tensor(EMBED) if EMBED in adapter.full else None
        untie = emb is None or not torch.equal(lm, emb)
        if untie:
            logger.warning("tied base but the adapter trained its own lm_head: writing it untied")
    return VocabPlan(base_rows, rows, untie)


def _check_architecture(base: BaseModel, adapter: Adapter, vocab: VocabPlan) -> None:
    for name, shape in adapter.shapes().items():
        target = name
        if name == LM_HEAD and base.tied:
            target = EMBED
        if target not in base.infos:
            raise MergeError(f"adapter/base architecture mismatch: adapter targets {name}, which the base "
                             f"model {base.path} does not have")
        base_shape = base.shape(target)
        if name in (EMBED, LM_HEAD):
            base_shape = (vocab.rows, *base_shape[1:])
        if tuple(shape) != tuple(base_shape):
            raise MergeError(f"adapter/base architecture mismatch at {name}: base {tuple(base_shape)}, "
                             f"adapter {tuple(shape)} (was the adapter trained on another base model?)")


def _is_4bit_in_training(name: str, ndim: int, settings: MergeSettings) -> bool:
    """transformers' bnb quantizer makes every decoder nn.Linear 4-bit (2-D weights inside
    layers.N), but not embeddings, lm_head, norms or llm_int8_skip_modules."""
    if ndim != 2 or not _DECODER_LINEAR.search(name) or "norm" in name.rsplit(".", 2)[-2]:
        return False
    return not any(skip in name for skip in settings.skip_modules)


class _Output:
    """Routes produced tensors to the output shard writers, opening each in turn. Writing runs
    in a background thread (file writes release the GIL) so disk I/O overlaps the next tensor's
    merge; at most `inflight_bytes` of finished tensors wait in memory (one bigger tensor may
    wait alone)."""

    def __init__(self, directory: Path, shards: list[list[PlannedTensor]], inflight_bytes: int = 256 * 2**20):
        self.directory = directory
        self.names = shard_names(len(shards))
        self.shards = shards
        self.current: SafetensorsWriter | None = None
        self.index = -1
        self.weight_map: dict[str, str] = {}
        self._limit = inflight_bytes
        self._pending: list[tuple[str, torch.Tensor]] = []
        self._pending_bytes = 0
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="merge-writer", daemon=True)
        self._thread.start()

    def write(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        with self._cond:
            while self._pending and self._pending_bytes + size > self._limit and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise MergeError(f"writing the merged shards failed: {self._error}") from self._error
            self._pending.append((name, tensor))
            self._pending_bytes += size
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending:
                    return
                name, tensor = self._pending[0]
            try:
                self._write_now(name, tensor)
            except BaseException as exc:  # surfaced to the producer on its next call
                with self._cond:
                    self._error = exc
                    self._pending.clear()
                    self._cond.notify_all()
                return
            with self._cond:
                self._pending.pop(0)
                self._pending_bytes -= tensor.numel() * tensor.element_size()
                self._cond.notify_all()

    def _write_now(self, name: str, tensor: torch.Tensor) -> None:
        if self.current is None or self.current.complete:
            if self.current is not None:
                self.current.close()
            self.index += 1
            self.current = SafetensorsWriter(self.directory / self.names[self.index], self.shards[self.index])
        self.current.write(name, tensor)
        self.weight_map[name] = self.names[self.index]

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        if self._error is not None:
            raise MergeError(f"writing the merged shards failed: {self._error}") from self._error
        if self.current is not None:
            self.current.close()
        if self.index != len(self.shards) - 1:
            raise RuntimeError("not every output shard was written")

    def abort(self) -> None:
        """Stop the writer without finishing (the temporary directory is removed by the caller)."""
        with self._cond:
            self._pending.clear()
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        if self.current is not None:
            self.current.abort()


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _merged_config(base: BaseModel, vocab: VocabPlan, dtype: torch.dtype) -> dict:
    cfg = dict(base.config)
    cfg.pop("quantization_config", None)
    name = str(dtype).replace("torch.", "")
    cfg["vocab_size"] = vocab.rows
    cfg["torch_dtype"] = name
    cfg["dtype"] = name
    if vocab.untie:
        cfg["tie_word_embeddings"] = False
    cfg["use_cache"] = True
    return cfg


def _generation_config(base: BaseModel, tok_dir: Path, tok_json: dict | None) -> dict:
    """`tok_json`: the parsed tokenizer.json of `tok_dir` (read_tokenizer_json), None if absent."""
    path = base.path / "generation_config.json"
    gen = json.loads(path.read_text()) if path.is_file() else {}
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if key not in gen and base.config.get(key) is not None:
            gen[key] = base.config[key]
    tok_cfg = tok_dir / "tokenizer_config.json"
    if tok_cfg.is_file() and tok_json is not None:
        eos = json.loads(tok_cfg.read_text()).get("eos_token")
        eos = eos.get("content") if isinstance(eos, dict) else eos
        ids = {t["content"]: t["id"] for t in tok_json.get("added_tokens", [])}
        if eos in ids:
            # The trained run's eos (axolotl may change it via special_tokens) must stop generation.
            cur = gen.get("eos_token_id")
            cur = cur if isinstance(cur, list) else ([cur] if cur is not None else [])
            if ids[eos] not in cur:
                gen["eos_token_id"] = cur + [ids[eos]] if cur else ids[eos]
    return gen


def _prepare_output(target: Path) -> tuple[Path, list[Path]]:
    """The temporary folder next to `target` the merge writes into (creating it probes that the
    place is writable, before any work), and the parent folders created for it (removed again if
    the merge fails)."""
    created: list[Path] = []
    parent = target.parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.merging-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as exc:
        _remove_created(created)
        raise MergeError(f"--output {target} cannot be written: {exc.strerror or exc}") from None
    return tmp, created


def _remove_created(created: list[Path]) -> None:
    for d in created:  # innermost first
        try:
            d.rmdir()
        except OSError:
            pass


def _commit_output(tmp: Path, target: Path) -> None:
    """Put the finished merge in place: an earlier merge's output is moved aside, the new one renamed
    in, and only then the old one removed (put back if the rename fails)."""
    old = None
    try:
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            target.rename(old)
        tmp.rename(target)
    except OSError as exc:
        if old is not None and not target.exists():
            old.rename(target)
        raise MergeError(f"--output {target} cannot be written: {exc.strerror or exc}") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def merge(
    config_path: str | Path,
    *,
    checkpoint: str | Path = "best",
    output: str | Path | None = None,
    dtype: str | None = None,
    max_shard_size: str | int = "5GB",
    qlora_faithful: bool = True,
    verify: bool = False,
    verify_tolerance: float | None = None,
    force: bool = False,
    allow_vocab_shrink: bool = False,
    select_by: str = "eval_loss",
    judge: JudgeOptions | None = None,
    check_served: CheckOptions | None = None,
) -> MergeResult:
    """Merge the chosen checkpoint of the run described by an axolotl config. Nothing is
    written unless the whole merge succeeds. With `verify`, the report's verify.passed says
    whether the max logit difference stayed within `verify_tolerance` (default: per output
    dtype, quantummind.merge.verify.DEFAULT_TOLERANCE); the output is written either way."""
    t0 = time.perf_counter()
    settings = load_settings(config_path)
    by_judge = select_by == "judge"
    if by_judge and str(checkpoint) != "best":
        raise MergeError("--select-by judge chooses among the checkpoints: it cannot be combined with --checkpoint")
    # by the judge, the choice is made once the output's place is known to be safe: it serves and evaluates
    candidates = judge_candidates(settings.output_dir) if by_judge else None
    choice = None if by_judge else select_checkpoint(settings.output_dir, checkpoint, select_by=select_by)
    warnings: list[str] = []
    if choice is not None:
        logger.info("checkpoints:\n%s", choice.format_table())
        if choice.how == "best" and choice.select_by == "eval_loss":  # select_checkpoint logged them
            warnings = [f"{s.path.name} left out of best-checkpoint selection: {s.unscored}" for s in choice.unscored]
    if check_served is not None and choice is not None:  # before any work: vLLM must be able to serve the adapter
        require_servable(choice.path)
    base_path = resolve_base_model(settings.base_model)
    target = Path(output) if output else DEFAULT_OUTPUT_ROOT / settings.run_name
    target = target.expanduser().resolve()
    inputs = [Input("the base model", base_path), Input("the run's output_dir", settings.output_dir),
              *([Input("the adapter checkpoint", choice.path)] if choice is not None else []),
              Input("the config", Path(config_path)), *(Input("the dataset", p) for p in settings.data_paths)]
    check_output_target(target, inputs, force=force)
    check_writable(target)
    base = open_base(base_path)
    out_dtype = _output_dtype(dtype, base)
    if verify_tolerance is not None and not (verify_tolerance >= 0 and math.isfinite(verify_tolerance)):
        raise MergeError(f"--verify-tolerance {verify_tolerance}: must be a finite number >= 0")
    max_bytes = parse_size(max_shard_size)

    tmp, created = _prepare_output(target)  # probes the place before any work
    judged = None
    try:
        if by_judge:
            judged = select_by_judge(base_path, settings.output_dir, tmp / "selection", judge or JudgeOptions(),
                                     table=candidates)
            choice = judge_choice(judged, candidates)
        adapter = Adapter(choice.path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_created(created)
        raise
    try:
        tok_dir = _tokenizer_source(choice, settings, base, warnings)
        tok_json = read_tokenizer_json(tok_dir)  # parsed once, for the vocab size and the eos id
        vocab = plan_vocab(base, adapter, tokenizer_vocab_size(tok_json), allow_vocab_shrink)
        _check_architecture(base, adapter, vocab)
        gen_config = _generation_config(base, tok_dir, tok_json)
        del tok_json
        faithful = bool(qlora_faithful and settings.is_qlora)

        # Plan every output tensor up front (order = base shard/file order) so headers are known.
        plan: list[PlannedTensor] = []
        for name, (_, info) in base.infos.items():
            shape = info.shape
            if name in (EMBED, LM_HEAD):
                shape = (vocab.rows, *shape[1:])
            src_dtype = DTYPES[info.dtype]
            plan.append(PlannedTensor(name, out_dtype if src_dtype.is_floating_point else src_dtype, shape))
            if name == EMBED and vocab.untie:
                plan.append(PlannedTensor(LM_HEAD, out_dtype, shape))
        shards = split_into_shards(plan, max_bytes)

        out: _Output | None = None
        try:
            out = _Output(tmp, shards)
            rounded = 0
            new_rows: dict[str, str] = {}  # EMBED/LM_HEAD -> how rows past the base's were filled
            for shard in base.shards:
                with SafetensorsReader(shard) as reader:
                    for name in reader.names():
                        was_4bit = (faithful and name not in adapter.full
                                    and _is_4bit_in_training(name, len(reader.infos[name].shape), settings))
                        tensor = _produce(name, reader.get(name), adapter, vocab, settings, was_4bit, new_rows)
                        rounded += int(was_4bit)
                        out.write(name, tensor.to(out_dtype) if tensor.is_floating_point() else tensor)
                        if name == EMBED and vocab.untie:
                            lm = _untied_lm_head(reader, adapter, vocab, new_rows)
                            out.write(LM_HEAD, lm.to(out_dtype))
                            del lm
                        del tensor
            out.close()
            if len(shards) > 1:
                total = sum(t.nbytes for t in plan)
                _write_json(tmp / "model.safetensors.index.json",
                            {"metadata": {"total_size": total}, "weight_map": out.weight_map})
            _write_json(tmp / "config.json", _merged_config(base, vocab, out_dtype))
            _write_json(tmp / "generation_config.json", gen_config)
            tok_files = write_tokenizer_files(base.path, tok_dir, tmp)

            for name, how in new_rows.items():
                if how == MEAN_FALLBACK:
                    _warn(warnings, f"{name}: the {vocab.rows - vocab.base_rows} new rows are {how}")
            report = {
                "checkpoint": str(choice.path),
                "selection": choice.how,
                "step": choice.step,
                "eval_loss": choice.eval_loss,
                "select_by": choice.select_by,
                "selected_by": choice.select_by if choice.how == "best" else choice.how,
                "reward": choice.reward,
                "judge_selection": judged.to_json(tmp / "selection") if judged is not None else None,
                "checkpoints": [s.to_json() for s in choice.table],
                "base_model": settings.base_model,
                "base_model_path": str(base.path),
                "config": str(Path(config_path).resolve()),
                "dtype": dtype_name(out_dtype),
                "resized_vocab": ({"from": vocab.base_rows, "to": vocab.rows, "new_rows": new_rows}
                                  if vocab.resized else None),
                "untied_embeddings": vocab.untie,
                "qlora_faithful": faithful,
                "qlora": ({"quant_type": settings.quant_type, "blocksize": settings.blocksize,
                           "double_quant": settings.double_quant, "rounded_tensors": rounded,
                           "train_dtype": dtype_name(settings.train_dtype),
                           "compute_dtype": dtype_name(settings.compute_dtype)}
                          if faithful else None),
                # the dtype bitsandbytes dequantized the 4-bit base to in training (QLoRA runs only)
                "compute_dtype": dtype_name(settings.compute_dtype) if settings.is_qlora else None,
                "adapter": {"r": adapter.config.get("r"), "lora_alpha": adapter.config.get("lora_alpha"),
                            "use_rslora": bool(adapter.config.get("use_rslora")), "use_dora": adapter.use_dora,
                            "lora_modules": len(adapter.lora), "full_tensors": sorted(adapter.full)},
                "tokenizer_from": str(tok_dir),
                "tokenizer_files": tok_files.files,
                # "base": the base's files byte for byte (the run changed nothing); "run_compatible": the base's
                # layout with the run's tokens, special tokens and template, readable by transformers 4.x and 5.x
                "tokenizer_layout": tok_files.layout,
                "tokenizer_changes": tok_files.changes,
                "added_tokens": tok_files.added_tokens,
                "shards": out.names,
                "max_shard_size": max_bytes,
                "warnings": warnings,
            }
            if verify:
                from quantummind.merge.verify import verify_merge

                tol = verify_tolerance if verify_tolerance is not None else default_tolerance(out_dtype)
                report["verify"] = verify_merge(base.path, choice.path, tmp, settings, faithful=faithful,
                                                tolerance=tol)
            report["seconds"] = round(time.perf_counter() - t0, 3)
            report["peak_rss_bytes"] = peak_rss_bytes()
            _write_json(tmp / "merge_report.json", report)
            _commit_output(tmp, target)
        except BaseException:
            if out is not None:
                out.abort()
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_created(created)
        raise
    finally:
        adapter.close()
    logger.info("merged %s -> %s in %.1f s", choice.path, target, report["seconds"])
    if check_served is not None:
        _check_served(target, base.path, choice.path, report, settings, check_served)
    return MergeResult(target, report)


def _check_served(target: Path, base_dir: Path, adapter: Path, report: dict, settings: MergeSettings,
                  options: CheckOptions) -> None:
    """Served adapter vs served merged folder, after the merge is in place; the result joins merge_report.json
    (rewritten through a temporary file, so a crash leaves the earlier report whole)."""
    try:
        check = run_served_check(target, base_dir, adapter, target / "check_served", qlora=settings.is_qlora,
                                 dtype=report["dtype"], options=options)
    except MergeError as exc:
        raise MergeError(f"{exc} (the merged model is in {target})") from None
    report["check_served"] = check.to_json()
    tmp = target / f".merge_report.json.{os.getpid()}"
    _write_json(tmp, report)
    tmp.replace(target / "merge_report.json")


def _resize(name: str, tensor: torch.Tensor, rows: int, new_rows: dict[str, str]) -> torch.Tensor:
    resized = resize_rows(tensor, rows)
    if resized.new_rows is not None:
        new_rows[name] = resized.new_rows
    return resized.tensor


def _produce(name: str, tensor: torch.Tensor, adapter: Adapter, vocab: VocabPlan, settings: MergeSettings,
             was_4bit: bool, new_rows: dict[str, str]) -> torch.Tensor:
    """`was_4bit`: the tensor was 4-bit in training and the merge is QLoRA-faithful (round it).
    `new_rows` records how grown embedding rows were filled (for merge_report.json)."""
    if name in adapter.full:  # modules_to_save: the trained tensor replaces the base one
        tensor = adapter.full_tensor(name)
        if vocab.rows > vocab.base_rows:
            new_rows[name] = FROM_ADAPTER
    elif name in (EMBED, LM_HEAD) and vocab.rows != tensor.shape[0]:
        tensor = _resize(name, tensor, vocab.rows, new_rows)
    if was_4bit:
        tensor = _roundtrip(tensor.float(), settings)
    if name in adapter.lora:
        return adapter.merge_into(name, tensor)
    return tensor


def _untied_lm_head(reader: SafetensorsReader, adapter: Adapter, vocab: VocabPlan,
                    new_rows: dict[str, str]) -> torch.Tensor:
    """lm_head of a tied base that training untied: the adapter's full copy, else the (resized)
    shared embedding, plus the adapter's lm_head LoRA if any."""
    if LM_HEAD in adapter.full:
        lm = adapter.full_tensor(LM_HEAD)
        if vocab.rows > vocab.base_rows:
            new_rows[LM_HEAD] = FROM_ADAPTER
    else:
        lm = reader.get(EMBED)
        if vocab.rows != lm.shape[0]:
            lm = _resize(LM_HEAD, lm, vocab.rows, new_rows)
    return adapter.merge_into(LM_HEAD, lm) if LM_HEAD in adapter.lora else lm


def _roundtrip(weight: torch.Tensor, settings: MergeSettings) -> torch.Tensor:
    w = weight.to(settings.train_dtype)
    dq = roundtrip_4bit(w, quant_type=settings.quant_type, blocksize=settings.blocksize,
                        double_quant=settings.double_quant)
    return dq.to(settings.compute_dtype).float()
