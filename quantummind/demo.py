"""`make demo`: the whole pipeline on a tiny locally built model, on the CPU.

Each step runs the same user-facing command the README gives (as a subprocess), so the demo
proves the journeys fit together: build the base model, generate a dataset, lint + train through
real axolotl, merge the best checkpoint, serve base and fine-tuned with serve_vllm.sh, evaluate
both, compare. Everything lands under one run directory (default runs/demo/).

`--rl` (make demo-rl) runs the reinforcement-learning journey instead: a deliberately short SFT of the tiny
model, then GRPO through axolotl with the sandboxed circuit judge as the reward (configs/tiny-cpu-grpo.yaml),
then the SFT model and the GRPO model served and evaluated on the same prompts with the same seed, and
compared (Wilson intervals, exact McNemar). Default run directory runs/demo-rl/.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from evaluation.comparison import format_comparison
from evaluation.report import METRICS, Thresholds, fmt_rate, load_run
from quantummind.paths import REPO_ROOT, offline_env
from quantummind.serving import BackgroundServer, start_background_server

TINY_CONFIG = REPO_ROOT / "configs" / "tiny-cpu.yaml"
TINY_GRPO_CONFIG = REPO_ROOT / "configs" / "tiny-cpu-grpo.yaml"


class DemoFailed(RuntimeError):
    pass


@dataclass
class DemoSettings:
    run_dir: Path
    num_examples: int = 400
    num_tests: int = 45
    max_tokens: int = 256
    concurrency: int = 4
    seed: int = 0
    # --rl: the short SFT's optimizer steps, the GRPO steps and how many RL prompts they draw from
    sft_steps: int = 100
    grpo_steps: int = 60
    num_rl_prompts: int = 400


@dataclass
class DemoResult:
    rates: dict[str, dict[str, float]]
    plots: list[Path]
    seconds: float
    step_seconds: dict[str, float] = field(default_factory=dict)
    comparison: dict | None = None  # comparison.yaml of the compare step (intervals, paired test)


class Pipeline:
    """Runs numbered steps, streams their output, and always stops the servers it started."""

    def __init__(self, settings: DemoSettings, total_steps: int):
        self.s = settings
        self.total = total_steps
        self.done = 0
        self.step_seconds: dict[str, float] = {}
        self.servers: list[BackgroundServer] = []
        self.env = offline_env()
        self.py = sys.executable

    @contextmanager
    def _numbered(self, title: str, shown_command: str) -> Iterator[str]:
        """Announces and times one step; yields its label for error messages."""
        self.done += 1
        print(f"\n==> [{self.done}/{self.total}] {title}\n    $ {shown_command}", flush=True)
        t0 = time.monotonic()
        yield f"step {self.done}/{self.total} ({title})"
        self.step_seconds[title] = time.monotonic() - t0
        print(f"    done in {self.step_seconds[title]:.0f} s", flush=True)

    def step(self, title: str, argv: list[str], ok_codes: tuple[int, ...] = (0,)) -> int:
        with self._numbered(title, " ".join(map(str, argv))) as label:
            proc = subprocess.run([str(a) for a in argv], cwd=REPO_ROOT, env=self.env)
            if proc.returncode not in ok_codes:
                raise DemoFailed(f"{label} failed with exit status {proc.returncode}")
        return proc.returncode

    def serve(self, title: str, model_dir: Path, name: str, max_seqs: int = 4, max_len: int = 1024) -> str:
        shown = f"SERVED_NAME={name} ./serve_vllm.sh --background {model_dir} PORT {max_seqs} {max_len}"
        with self._numbered(title, shown) as label:
            try:
                server = start_background_server(model_dir, name, self.s.run_dir / "serve", max_seqs=max_seqs,
                                                 max_len=max_len, quiet=False)
            except RuntimeError as exc:
                raise DemoFailed(f"{label} failed: the server did not start") from exc
            self.servers.append(server)
        return server.base_url

    def stop_servers(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers.clear()


def write_run_config(run_dir: Path, **overrides) -> Path:
    """configs/tiny-cpu.yaml with every path pointed inside the run directory (`overrides` replace keys)."""
    cfg = yaml.safe_load(TINY_CONFIG.read_text())
    cfg["base_model"] = str(run_dir / "base-model")
    for key, name in (("datasets", "train.jsonl"), ("test_datasets", "val.jsonl")):
        for ds in cfg.get(key) or []:
            ds["path"] = str(run_dir / "data" / name)
    cfg["output_dir"] = str(run_dir / "checkpoints" / "tiny-cpu")
    cfg["dataset_prepared_path"] = str(run_dir / "prepared")
    cfg.update(overrides)
    out = run_dir / "tiny-cpu.yaml"
    differ = "only the paths differ" if not overrides else f"paths and {', '.join(overrides)} differ"
    header = f"# Generated by `make demo` from {TINY_CONFIG.relative_to(REPO_ROOT)}; {differ}.\n"
    out.write_text(header + yaml.safe_dump(cfg, sort_keys=False))
    return out


def write_grpo_config(run_dir: Path, base_model: Path, trl: dict | None = None, **overrides) -> Path:
    """configs/tiny-cpu-grpo.yaml with its paths inside the run directory, starting from `base_model`
    (`trl` updates the trl section, `overrides` replace top-level keys)."""
    cfg = yaml.safe_load(TINY_GRPO_CONFIG.read_text())
    cfg["trl"].update(trl or {})
    cfg["base_model"] = str(base_model)
    cfg["datasets"][0]["path"] = str(run_dir / "rl-data" / "train.jsonl")
    cfg["output_dir"] = str(run_dir / "checkpoints" / "tiny-cpu-grpo")
    cfg["dataset_prepared_path"] = str(run_dir / "prepared-grpo")
    cfg.update(overrides)
    out = run_dir / "tiny-cpu-grpo.yaml"
    differ = "paths" + (f" and {', '.join([*(f'trl.{k}' for k in trl or {}), *overrides])}" if trl or overrides else "")
    out.write_text(f"# Generated by `make demo-rl` from {TINY_GRPO_CONFIG.relative_to(REPO_ROOT)}; {differ} differ.\n"
                   + yaml.safe_dump(cfg, sort_keys=False))
    return out


def read_rates(eval_dir: Path) -> dict[str, float | None]:
    """The three rates of a run; None where the log says n/a (no scored reply)."""
    log = load_run(eval_dir)
    return {key: None if log.get(key) is None else float(log[key]) for key, _, _ in METRICS}


def fresh_run_dir(s: DemoSettings, stale: tuple[str, ...]) -> Path:
    """The run directory, absolute (servers and subprocesses must agree on where things are), without the
    outputs of an earlier run."""
    s.run_dir = s.run_dir.resolve()
    s.run_dir.mkdir(parents=True, exist_ok=True)
    for name in stale:
        shutil.rmtree(s.run_dir / name, ignore_errors=True)
    return s.run_dir


def build_model_and_data(p: Pipeline, s: DemoSettings) -> None:
    """The first two steps of both demos: the tiny base model and the verified SFT dataset."""
    p.step("build the tiny base model", [p.py, "fine-tuning/build_tiny_model.py", "--out", s.run_dir / "base-model",
                                         "--seed", s.seed])
    p.step("generate a small verified dataset", [p.py, "fine-tuning/prepare_dataset.py", "--out", s.run_dir / "data",
                                                 "--num-examples", s.num_examples, "--style", "simple",
                                                 "--seed", s.seed])


def serve_evaluate_compare(p: Pipeline, s: DemoSettings, a: tuple[str, str, Path, str],
                           b: tuple[str, str, Path, str]) -> None:
    """Serve models A and B (each: eval dir name, title, model dir, served name), evaluate both on the same
    prompts and seed, stop the servers, compare A vs B (Wilson + exact McNemar) into run_dir/compare."""
    urls = [p.serve(f"serve the {title} with vLLM", model_dir, name) for _, title, model_dir, name in (a, b)]
    common = ["--num-tests", s.num_tests, "--max-tokens", s.max_tokens, "--concurrency", s.concurrency,
              "--seed", s.seed]
    for (key, title, _, name), url in zip((a, b), urls):
        # Exit status 1 means "targets not met": expected for a tiny model, not a failure.
        p.step(f"evaluate the {title}", [p.py, "-m", "evaluation", "run", "--base-url", url, "--model", name,
                                         "--out", s.run_dir / "eval" / key, *common], ok_codes=(0, 1))
    p.stop_servers()
    label = {"base": "base", "finetuned": "fine-tuned"}
    p.step(f"compare {label.get(a[0], a[1].split()[0])} vs {label.get(b[0], b[1].split()[0])}",
           [p.py, "-m", "evaluation", "compare", s.run_dir / "eval" / a[0], s.run_dir / "eval" / b[0],
            "--out", s.run_dir / "compare"], ok_codes=(0, 1))


def collect_result(p: Pipeline, a: str, b: str, t_start: float, extra_plots: list[Path] | None = None) -> DemoResult:
    """The rates of eval/<a> (shown as the first model) and eval/<b>, the comparison and its plots."""
    run = p.s.run_dir
    rates = {"base": read_rates(run / "eval" / a), "fine-tuned": read_rates(run / "eval" / b)}
    plots = sorted((run / "compare").glob("*.png")) + list(extra_plots or [])
    comparison = yaml.safe_load((run / "compare" / "comparison.yaml").read_text())
    return DemoResult(rates, plots, time.monotonic() - t_start, p.step_seconds, comparison)


def run_demo(s: DemoSettings) -> DemoResult:
    t_start = time.monotonic()
    run = fresh_run_dir(s, ("checkpoints", "prepared", "merged", "eval", "compare"))
    p = Pipeline(s, total_steps=10)
    py = p.py
    try:
        build_model_and_data(p, s)
        config = write_run_config(run)
        p.step("lint the training config", [py, "fine-tuning/train.py", "lint", config])
        p.step("train with axolotl (LoRA, CPU)", [py, "fine-tuning/train.py", "train", config])
        p.step("merge the best checkpoint", [py, "fine-tuning/merge_adapter.py", config, "--output", run / "merged",
                                             "--force"])
        serve_evaluate_compare(p, s, ("base", "base model", run / "base-model", "tiny-base"),
                               ("finetuned", "fine-tuned model", run / "merged", "tiny-finetuned"))
    finally:
        p.stop_servers()
    return collect_result(p, "base", "finetuned", t_start)


def run_demo_rl(s: DemoSettings) -> DemoResult:
    """Short SFT -> GRPO with circuit_reward -> both evaluated on the same prompts and seed -> compared."""
    t_start = time.monotonic()
    run = fresh_run_dir(s, ("checkpoints", "prepared", "prepared-grpo", "sft", "grpo", "eval", "compare"))
    p = Pipeline(s, total_steps=13)
    py = p.py
    try:
        build_model_and_data(p, s)
        # Deliberately short: a model that sometimes gets it right leaves GRPO something to reward.
        config = write_run_config(run, max_steps=s.sft_steps, eval_steps=max(1, s.sft_steps // 2),
                                  save_steps=max(1, s.sft_steps // 2), logging_steps=5)
        p.step("short SFT with axolotl (LoRA, CPU)", [py, "fine-tuning/train.py", "train", config])
        p.step("merge the SFT checkpoint", [py, "fine-tuning/merge_adapter.py", config, "--output", run / "sft",
                                            "--force"])
        p.step("write RL prompts", [py, "fine-tuning/prepare_dataset.py", "--rl", "--out", run / "rl-data",
                                    "--num-examples", s.num_rl_prompts, "--seed", s.seed])
        # Completions sampled as the evaluation samples replies (its length, its temperature 0.7), 8 per prompt,
        # 2 prompts per step; a KL term keeps the policy near the SFT model it starts from.
        grpo = write_grpo_config(run, run / "sft", trl={"max_completion_length": s.max_tokens, "num_generations": 8,
                                                        "temperature": 0.7, "beta": 0.04},
                                 micro_batch_size=8, gradient_accumulation_steps=2, max_steps=s.grpo_steps,
                                 save_steps=max(1, s.grpo_steps // 4), learning_rate=0.0005, seed=s.seed)
        p.step("lint the GRPO config", [py, "fine-tuning/train.py", "lint", grpo])
        p.step("GRPO with axolotl, rewarded by the sandboxed circuit judge", [py, "fine-tuning/train.py", "train", grpo])
        p.step("merge the GRPO checkpoint selected by reward", [py, "fine-tuning/merge_adapter.py", grpo,
                                                                "--select-by", "reward", "--output", run / "grpo",
                                                                "--force"])
        serve_evaluate_compare(p, s, ("sft", "SFT model", run / "sft", "tiny-sft"),
                               ("grpo", "GRPO model", run / "grpo", "tiny-grpo"))
    finally:
        p.stop_servers()
    return collect_result(p, "sft", "grpo", t_start, sorted((run / "checkpoints" / "tiny-cpu-grpo").glob("*_curve.png")))


def print_summary(result: DemoResult, run_dir: Path, labels: tuple[str, str] = ("base", "fine-tuned")) -> None:
    print("\n" + "=" * 64)
    print(f"{'metric':<22}{labels[0]:>12}{labels[1]:>14}{'target':>12}")
    thresholds = Thresholds()  # the evaluation steps run with the default targets
    for key, field_name, _ in METRICS:
        target = f"> {getattr(thresholds, field_name):g} %"
        base, tuned = (fmt_rate(result.rates[side][key]) for side in ("base", "fine-tuned"))
        print(f"{key:<22}{base:>11}%{tuned:>13}%{target:>12}")
    print("=" * 64)
    if result.comparison:
        print(f"{labels[0]} (A) vs {labels[1]} (B), 95 % Wilson intervals and the exact McNemar test on paired prompts:")
        print(format_comparison(result.comparison))
        print("=" * 64)
    print("plots:   " + ("\n         ".join(str(p) for p in result.plots) or "(none)"))
    print(f"reports: {run_dir / 'compare' / 'report.md'}")
    print(f"total:   {result.seconds / 60:.1f} min  (" +
          ", ".join(f"{k.split(' (')[0]}: {v:.0f}s" for k, v in result.step_seconds.items()) + ")")


def main(argv: list[str] | None = None) -> int:
    d = DemoSettings(REPO_ROOT / "runs" / "demo")  # the defaults, stated once
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rl", action="store_true",
                    help="the RL journey: short SFT, then GRPO with the circuit judge as reward, SFT vs GRPO compared")
    ap.add_argument("--run-dir", type=Path, default=None,
                    help="where every output goes (default runs/demo, with --rl runs/demo-rl)")
    ap.add_argument("--sft-steps", type=int, default=d.sft_steps,
                    help=f"--rl: optimizer steps of the deliberately short SFT (default {d.sft_steps})")
    ap.add_argument("--grpo-steps", type=int, default=d.grpo_steps,
                    help=f"--rl: GRPO optimizer steps (default {d.grpo_steps})")
    ap.add_argument("--num-examples", type=int, default=d.num_examples, help=f"dataset size (default {d.num_examples})")
    ap.add_argument("--num-tests", type=int, default=d.num_tests,
                    help=f"evaluation prompts per model (default {d.num_tests}: each combination once)")
    ap.add_argument("--max-tokens", type=int, default=d.max_tokens,
                    help=f"max tokens per reply (default {d.max_tokens}; the tiny dataset's answers are ~160 tokens)")
    ap.add_argument("--seed", type=int, default=d.seed,
                    help=f"seed for the model, dataset and sampling (default {d.seed})")
    args = ap.parse_args(argv)
    if args.sft_steps < 1 or args.grpo_steps < 1:
        ap.error("--sft-steps and --grpo-steps must be >= 1")
    run_dir = args.run_dir or REPO_ROOT / "runs" / ("demo-rl" if args.rl else "demo")
    args.run_dir = run_dir
    settings = DemoSettings(run_dir, args.num_examples, args.num_tests, args.max_tokens, seed=args.seed,
                            sft_steps=args.sft_steps, grpo_steps=args.grpo_steps)
    try:
        result = run_demo_rl(settings) if args.rl else run_demo(settings)
    except DemoFailed as exc:
        print(f"\ndemo: error: {exc}; servers stopped. Outputs so far are in {args.run_dir}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo: interrupted; servers stopped.", file=sys.stderr)
        return 130
    print_summary(result, args.run_dir, ("SFT", "GRPO") if args.rl else ("base", "fine-tuned"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
