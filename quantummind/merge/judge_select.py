"""`--select-by judge`: choose the checkpoint by what it writes, not by eval_loss.

One vLLM server serves the base model with every candidate checkpoint as a LoRA adapter
(`serve_vllm.sh` with LORA_MODULES); `python -m evaluation run` asks each adapter the same N prompts
with the same seed, all adapters at once; the winner has the highest verification rate (ties: the
BP-free rate, then the lower eval_loss, then the later step). Everything lands in a `selection/`
folder: each checkpoint's evaluation, `report.md` (Wilson intervals; the winner against the eval_loss
choice with the exact McNemar test) and `comparison/` (evaluation's own paired comparison).
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from quantummind.merge.checkpoints import (ADAPTER_WEIGHTS, CheckpointChoice, CheckpointScore, list_checkpoints,
                                          lowest_eval_loss)
from quantummind.merge.errors import MergeError

logger = logging.getLogger(__name__)

REPORT = "report.md"


@dataclass(frozen=True)
class JudgeOptions:
    prompts: int = 45  # each of the seed's 45 prompt combinations once
    seed: int = 0
    max_tokens: int = 1024  # as `evaluation run`
    temperature: float = 0.7  # as `evaluation run`: the rates users will see
    max_seqs: int = 8
    max_len: int | None = None  # --max-model-len; None: the model's own
    serve_timeout_s: int = 600


@dataclass(frozen=True)
class Rate:
    successes: int
    n: int

    @property
    def percent(self) -> float | None:
        return 100.0 * self.successes / self.n if self.n else None

    def ci95(self) -> list[float] | None:
        from evaluation.stats import wilson_interval

        ci = wilson_interval(self.successes, self.n)
        return None if ci is None else [round(ci[0], 2), round(ci[1], 2)]

    def to_json(self) -> dict:
        pct = self.percent
        return {"successes": self.successes, "n": self.n, "rate": None if pct is None else round(pct, 2),
                "ci95": self.ci95()}


@dataclass(frozen=True)
class Candidate:
    score: CheckpointScore
    out_dir: Path
    syntax: Rate
    verification: Rate
    bp_free: Rate
    unscored: int  # judge and request errors: no verdict, outside every rate

    @property
    def name(self) -> str:
        return self.score.path.name

    def rank_key(self) -> tuple:
        """Larger is better: verification rate, BP-free rate, lower eval_loss (none: last), later step."""
        loss = self.score.eval_loss
        return (self.verification.percent or 0.0, self.bp_free.percent or 0.0,
                -loss if loss is not None and math.isfinite(loss) else -math.inf, self.score.step)

    def to_json(self, selection_dir: Path) -> dict:
        return {**self.score.to_json(), "evaluation": str(self.out_dir.relative_to(selection_dir.parent)),
                "syntax": self.syntax.to_json(), "verification": self.verification.to_json(),
                "bp_free": self.bp_free.to_json(), "unscored_replies": self.unscored}


@dataclass
class JudgeSelection:
    winner: Candidate
    eval_loss_choice: Candidate | None  # lowest eval_loss among the candidates; None when none logged one
    candidates: list[Candidate]
    options: JudgeOptions
    versus_eval_loss: dict | None  # winner vs eval_loss choice on verification: paired counts + exact McNemar p
    seconds: float

    def to_json(self, selection_dir: Path) -> dict:
        o = self.options
        return {"prompts": o.prompts, "seed": o.seed, "max_tokens": o.max_tokens, "temperature": o.temperature,
                "winner": str(self.winner.score.path),
                "eval_loss_choice": None if self.eval_loss_choice is None else str(self.eval_loss_choice.score.path),
                "versus_eval_loss": self.versus_eval_loss,
                "checkpoints": [c.to_json(selection_dir) for c in self.candidates],
                "report": f"{selection_dir.name}/{REPORT}", "seconds": round(self.seconds, 1)}


SELECT_REMEDY = ("train without lora_modules_to_save / use_dora (a run that adds tokens needs lora_modules_to_save: "
                 "then choose with --select-by eval_loss or --checkpoint DIR), or merge checkpoints one by one "
                 "(--checkpoint DIR --output ...) and compare them with `python -m evaluation run`")


def servable(ckpt: Path, why: str = "--select-by judge serves every checkpoint as a LoRA module",
             remedy: str = SELECT_REMEDY) -> None:
    """MergeError when vLLM cannot serve the checkpoint's adapter as a LoRA module (checked before a server starts)."""
    from quantummind.serving import lora_problem

    problem = lora_problem(ckpt)
    if problem:
        raise MergeError(f"{ckpt.name} {problem}, and {why}: {remedy}")


def candidates_of(output_dir: Path) -> list[CheckpointScore]:
    table = [s for s in list_checkpoints(output_dir) if (s.path / ADAPTER_WEIGHTS).is_file()]
    if not table:
        raise MergeError(f"no checkpoint-* with {ADAPTER_WEIGHTS} under {output_dir}: nothing to evaluate")
    for s in table:
        servable(s.path)
    return table


def _rates(out_dir: Path) -> tuple[Rate, Rate, Rate, int]:
    from evaluation.comparison import OUTCOMES
    from evaluation.report import parse_jsonl, scored

    path = out_dir / "results.jsonl"
    results = parse_jsonl(path.read_text(), path)
    counted = [r for r in results if scored(r)]

    def rate(metric: str) -> Rate:
        return Rate(sum(bool(OUTCOMES[metric](r)) for r in counted), len(counted))

    return rate("syntax_rate"), rate("verification_rate"), rate("bp_free_rate"), len(results) - len(counted)


def _evaluate_all(base_url: str, table: list[CheckpointScore], selection_dir: Path, o: JudgeOptions) -> None:
    """`python -m evaluation run` for every adapter at once, each into selection/<checkpoint>/."""
    workers = max(1, (os.cpu_count() or 1) // len(table))
    procs: dict[str, tuple[subprocess.Popen, Path]] = {}
    try:
        for s in table:
            log = selection_dir / f"{s.path.name}.log"
            cmd = [sys.executable, "-m", "evaluation", "run", "--base-url", base_url, "--model", s.path.name,
                   "--num-tests", str(o.prompts), "--seed", str(o.seed), "--max-tokens", str(o.max_tokens),
                   "--temperature", str(o.temperature), "--out", str(selection_dir / s.path.name),
                   "--workers", str(workers), "--max-judge-errors", str(o.prompts), "--no-progress"]
            with open(log, "wb") as fh:
                procs[s.path.name] = (subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT), log)
        _wait(procs)
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _wait(procs: dict[str, tuple[subprocess.Popen, Path]]) -> None:
    from tqdm import tqdm

    pending = dict(procs)
    with tqdm(total=len(procs), desc="evaluating checkpoints", unit="ckpt", disable=None) as bar:
        while pending:
            for name, (proc, log) in list(pending.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                del pending[name]
                bar.update(1)
                if rc not in (0, 1):  # 1: targets not met, which is a verdict, not a failure
                    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
                    why = next((ln for ln in lines if ln.startswith("error:")), lines[-1] if lines else "no output")
                    raise MergeError(f"evaluating {name} failed (exit {rc}): {why} (log: {log})")
            time.sleep(0.5)


def _versus(eval_loss_dir: Path, winner_dir: Path, out_dir: Path, labels: tuple[str, str]) -> dict:
    """evaluation's own paired comparison (A = eval_loss choice, B = judge choice), into selection/comparison/."""
    from evaluation.comparison import write_comparison

    comp = write_comparison(eval_loss_dir, winner_dir, out_dir, labels=labels)
    ver = comp["metrics"]["verification_rate"]
    return {"a": labels[0], "b": labels[1], **ver["paired"], "b_minus_a_points": ver["change"],
            "significant": bool(ver["significant"]), "comparison": f"{out_dir.parent.name}/{out_dir.name}/report.md"}


def _pct(r: Rate) -> str:
    if r.percent is None:
        return "n/a"
    lo, hi = r.ci95()
    return f"{r.percent:.1f} % [{lo:.1f}, {hi:.1f}] ({r.successes}/{r.n})"


def write_report(sel: JudgeSelection, path: Path) -> None:
    o = sel.options
    rows = ["| | checkpoint | step | eval_loss | verification (95 % CI) | BP-free (95 % CI) | syntax | not scored |",
            "| --- | --- | ---: | ---: | --- | --- | --- | ---: |"]
    for c in sel.candidates:
        mark = "**winner**" if c is sel.winner else ("eval_loss choice" if c is sel.eval_loss_choice else "")
        loss = "-" if c.score.eval_loss is None else f"{c.score.eval_loss:.6g}"
        rows.append(f"| {mark} | `{c.name}` | {c.score.step} | {loss} | {_pct(c.verification)} | {_pct(c.bp_free)} "
                    f"| {_pct(c.syntax)} | {c.unscored} |")
    if sel.eval_loss_choice is None:
        versus = "No candidate logged an eval_loss (a GRPO run?): there is no eval_loss choice to compare with."
    elif sel.eval_loss_choice is sel.winner:
        versus = f"The judge and eval_loss agree: `{sel.winner.name}`."
    else:
        v = sel.versus_eval_loss
        versus = (f"The judge chose `{sel.winner.name}`, eval_loss would have chosen `{sel.eval_loss_choice.name}`. "
                  f"On the {v['n']} prompts both answered with a verdict, `{sel.winner.name}` verified "
                  f"{v['b_minus_a_points']:+.1f} points more ({v['b_only']} prompts only it verified, "
                  f"{v['a_only']} only the eval_loss choice, {v['both']} both, {v['neither']} neither); exact "
                  f"McNemar p = {v['p_value']:.3g}"
                  f"{' (significant at 0.05)' if v['significant'] else ' (not significant at 0.05: more prompts would tell)'}. "
                  f"Full paired comparison: `{v['comparison']}`.")
    path.write_text(
        f"# Checkpoint selection by the judge\n\n"
        f"Each checkpoint served as a LoRA adapter on the base model and asked the same {o.prompts} prompts "
        f"(seed {o.seed}, temperature {o.temperature}, at most {o.max_tokens} tokens); every reply judged in "
        f"the sandbox like `python -m evaluation run`. Ranked by verification rate, then BP-free rate, then "
        f"lower eval_loss. Intervals: 95 % Wilson over each checkpoint's scored replies.\n\n"
        + "\n".join(rows) + f"\n\n{versus}\n\nTook {sel.seconds:.0f} s.\n")


def select_by_judge(base_model: Path, output_dir: Path, selection_dir: Path, options: JudgeOptions,
                    *, table: list[CheckpointScore] | None = None) -> JudgeSelection:
    """Serve `base_model` with every checkpoint under `output_dir` as a LoRA adapter, evaluate each, pick the
    winner. Writes `selection_dir` (which must not exist yet). MergeError when a server or an evaluation fails."""
    from quantummind.serving import ServerStartError, served

    t0 = time.perf_counter()
    table = table if table is not None else candidates_of(output_dir)
    if options.prompts < 1 or options.max_tokens < 1:
        raise MergeError("--select-prompts and --select-max-tokens must be >= 1")
    selection_dir.mkdir(parents=True)
    logger.info("serving %s with %d adapters to judge %d prompts each (%d generations)", base_model.name,
                len(table), options.prompts, options.prompts * len(table))
    try:
        with served(base_model, "base", selection_dir / "serve", adapters={s.path.name: s.path for s in table},
                    max_seqs=options.max_seqs, max_len=options.max_len, timeout_s=options.serve_timeout_s) as server:
            _evaluate_all(server.base_url, table, selection_dir, options)
    except ServerStartError as exc:
        raise MergeError(f"the vLLM server for --select-by judge did not start: {exc} "
                         f"(log in {selection_dir / 'serve'})") from None
    cands = [Candidate(s, selection_dir / s.path.name, *_rates(selection_dir / s.path.name)) for s in table]
    winner = max(cands, key=Candidate.rank_key)
    lowest = lowest_eval_loss([c.score for c in cands])
    by_loss = next((c for c in cands if c.score is lowest), None)
    versus = None
    if by_loss is not None and by_loss is not winner:
        versus = _versus(by_loss.out_dir, winner.out_dir, selection_dir / "comparison", (by_loss.name, winner.name))
    sel = JudgeSelection(winner, by_loss, cands, options, versus, time.perf_counter() - t0)
    write_report(sel, selection_dir / REPORT)
    for c in cands:
        logger.info("%s %-24s verification %s  BP-free %s", "->" if c is winner else "  ", c.name,
                    _pct(c.verification), _pct(c.bp_free))
    return sel


def choice_of(sel: JudgeSelection, table: list[CheckpointScore]) -> CheckpointChoice:
    w = sel.winner.score
    return CheckpointChoice(w.path, w.step, w.eval_loss, "best", table, select_by="judge")
