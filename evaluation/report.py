"""validation_log.yaml, report.md and PNG plots for one run; side-by-side comparison of two runs."""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from evaluation.prompts import HAMILTONIANS


@dataclass(frozen=True)
class Thresholds:
    """Rates in percent; a target is met when the rate is strictly greater (the seed's `>`)."""
    syntax: float = 95.0
    verification: float = 80.0
    bp_free: float = 60.0


def _pct(num: int, den: int) -> float:
    return round(100.0 * num / den, 2) if den else 0.0


def _rates(results: list[dict]) -> dict[str, Any]:
    n = len(results)
    constrained = [r for r in results if r.get("constraint_satisfied") is not None]
    return {
        "num_tests": n,
        "syntax_rate": _pct(sum(bool(r.get("syntax_valid")) for r in results), n),
        "verification_rate": _pct(sum(bool(r.get("verification_pass")) for r in results), n),
        "bp_free_rate": _pct(sum(r.get("bp_free") is True for r in results), n),
        "constraint_rate": _pct(sum(r["constraint_satisfied"] is True for r in constrained), len(constrained)),
    }


def summarize(results: list[dict], thresholds: Thresholds) -> dict[str, Any]:
    s = _rates(results)
    s["passed"] = bool(s["num_tests"] > 0 and s["syntax_rate"] > thresholds.syntax
                       and s["verification_rate"] > thresholds.verification and s["bp_free_rate"] > thresholds.bp_free)
    s["by_hamiltonian"] = {h: _rates([r for r in results if r.get("hamiltonian") == h])
                           for h in HAMILTONIANS if any(r.get("hamiltonian") == h for r in results)}
    sizes = sorted({int(r["num_qubits"]) for r in results if r.get("num_qubits") is not None})
    s["by_num_qubits"] = {n: _rates([r for r in results if r.get("num_qubits") == n]) for n in sizes}
    errors: dict[str, int] = {}
    for r in results:
        if r.get("error"):
            kind = str(r["error"]).split(":")[0][:60]
            errors[kind] = errors.get(kind, 0) + 1
    s["errors"] = dict(sorted(errors.items(), key=lambda kv: -kv[1])[:15])
    return s


def write_results(out_dir: Path, results: list[dict]) -> Path:
    path = out_dir / "results.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in results:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def write_validation_log(out_dir: Path, summary: dict, *, model: str | None, endpoint: str | None,
                         thresholds: Thresholds, extra: dict | None = None) -> Path:
    log = {k: summary[k] for k in ("syntax_rate", "verification_rate", "bp_free_rate", "num_tests", "passed")}
    log.update({
        "model": model, "endpoint": endpoint, "thresholds": asdict(thresholds),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "constraint_rate": summary["constraint_rate"],
        "by_hamiltonian": summary["by_hamiltonian"], "by_num_qubits": summary["by_num_qubits"],
        "errors": summary["errors"],
    })
    log.update(extra or {})
    path = out_dir / "validation_log.yaml"
    path.write_text(yaml.safe_dump(log, sort_keys=False))
    return path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# (rate key in validation_log.yaml, Thresholds field, label): the three targets, in the seed's order.
METRICS = (("syntax_rate", "syntax", "Syntax valid"), ("verification_rate", "verification", "Verification pass"),
           ("bp_free_rate", "bp_free", "BP-free"))


def plot_rates(path: Path, series: dict[str, dict], thresholds: Thresholds, title: str) -> Path:
    """Grouped bars (one group per metric, one bar per run) with the target as a dashed line."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(1, len(series))
    for j, (label, s) in enumerate(series.items()):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(METRICS))]
        bars = ax.bar(xs, [s[k] for k, _, _ in METRICS], width, label=label)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    for i, (_, tk, _) in enumerate(METRICS):
        ax.hlines(getattr(thresholds, tk), i - 0.45, i + 0.45, colors="k", linestyles="dashed")
    ax.set_xticks(range(len(METRICS)), [name for _, _, name in METRICS])
    ax.set_ylim(0, 105)
    ax.set_ylabel("% of replies (dashed: target)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_breakdown(path: Path, summary: dict) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, title in ((axes[0], "by_hamiltonian", "by Hamiltonian"), (axes[1], "by_num_qubits", "by qubit count")):
        groups = list(summary[key])
        for j, (mk, _, name) in enumerate(METRICS):
            xs = [i + (j - 1) * 0.27 for i in range(len(groups))]
            ax.bar(xs, [summary[key][g][mk] for g in groups], 0.27, label=name)
        ax.set_xticks(range(len(groups)), [str(g) for g in groups])
        ax.set_title(title)
    axes[0].set_ylabel("% of replies")
    axes[0].set_ylim(0, 105)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _table(rows: list[list[str]]) -> str:
    head = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
    return head + "".join("| " + " | ".join(r) + " |\n" for r in rows[1:])


def write_report(out_dir: Path, summary: dict, thresholds: Thresholds, *, model: str | None,
                 endpoint: str | None) -> Path:
    plot_rates(out_dir / "rates.png", {model or "replies": summary}, thresholds, f"QuantumMind evaluation: {model or ''}")
    plot_breakdown(out_dir / "breakdown.png", summary)
    rows = [["metric", "rate %", "target %", "met"]]
    for mk, tk, name in METRICS:
        rows.append([name, f"{summary[mk]:.1f}", f"> {getattr(thresholds, tk):g}",
                     "yes" if summary[mk] > getattr(thresholds, tk) else "no"])
    rows.append(["Constraint satisfied (of constrained prompts)", f"{summary['constraint_rate']:.1f}", "-", "-"])
    brk = [["group", "n", "syntax %", "verification %", "BP-free %"]]
    for key in ("by_hamiltonian", "by_num_qubits"):
        for g, s in summary[key].items():
            brk.append([str(g), str(s["num_tests"]), f"{s['syntax_rate']:.1f}", f"{s['verification_rate']:.1f}",
                        f"{s['bp_free_rate']:.1f}"])
    errs = "\n".join(f"- {k}: {v}" for k, v in summary["errors"].items()) or "- none"
    text = (f"# Evaluation report\n\nModel: `{model}`  \nEndpoint: `{endpoint}`  \nReplies: {summary['num_tests']}  \n"
            f"Result: **{'PASSED' if summary['passed'] else 'FAILED'}** (all three targets must be met)\n\n"
            f"{_table(rows)}\n![rates](rates.png)\n\n## Breakdown\n\n{_table(brk)}\n![breakdown](breakdown.png)\n\n"
            f"## Most common failure reasons\n\n{errs}\n\nRules: see docs/evaluation.md.\n")
    path = out_dir / "report.md"
    path.write_text(text)
    return path


def load_run(run_dir: Path) -> dict:
    log_path = run_dir / "validation_log.yaml"
    if not log_path.exists():
        raise FileNotFoundError(f"{log_path} not found (run `python -m evaluation run` or `score` first)")
    data = yaml.safe_load(log_path.read_text())
    if not isinstance(data, dict) or "verification_rate" not in data:
        raise ValueError(f"{log_path} is not a validation log")
    return data
