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
    s.update(failure_summary(results))
    return s


def failure_summary(results: list[dict]) -> dict[str, Any]:
    """`failures`: kind -> count over the replies that failed (docs/evaluation.md, "failure"), most common
    first; `api_drift_rate`: percent of all replies whose code used an API that Qiskit removed
    (`removed_apis` not empty); `removed_apis`: API name -> number of replies using it."""
    from collections import Counter

    kinds = Counter(str(r["failure"]) for r in results if r.get("failure"))
    used = Counter(name for r in results for name in (r.get("removed_apis") or []))
    return {"failures": dict(sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))),
            "api_drift_rate": _pct(sum(bool(r.get("removed_apis")) for r in results), len(results)),
            "removed_apis": dict(sorted(used.items(), key=lambda kv: (-kv[1], kv[0])))}


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
    log.update({k: summary[k] for k in ("failures", "api_drift_rate", "removed_apis") if k in summary})
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
    fails = _failures_section(summary)
    text = (f"# Evaluation report\n\nModel: `{model}`  \nEndpoint: `{endpoint}`  \nReplies: {summary['num_tests']}  \n"
            f"Result: **{'PASSED' if summary['passed'] else 'FAILED'}** (all three targets must be met)\n\n"
            f"{_table(rows)}\n![rates](rates.png)\n\n## Breakdown\n\n{_table(brk)}\n![breakdown](breakdown.png)\n\n"
            f"{fails}## Most common failure reasons\n\n{errs}\n\nRules: see docs/evaluation.md.\n")
    path = out_dir / "report.md"
    path.write_text(text)
    return path


def _failures_section(summary: dict) -> str:
    """report.md's "Failures" section: the failure kinds and the API drift."""
    if "failures" not in summary:
        return ""
    rows = [["failure", "replies"]] + [[k, str(v)] for k, v in summary["failures"].items()]
    kinds = _table(rows) if len(rows) > 1 else "No reply failed.\n"
    apis = ", ".join(f"`{k}` ({v})" for k, v in (summary.get("removed_apis") or {}).items()) or "none"
    return (f"## Failures\n\n{kinds}\nAPI drift: **{summary['api_drift_rate']:.1f} %** of replies use an API "
            f"that Qiskit removed ({apis}).\n\n")


def compare_failures(a: dict, b: dict) -> tuple[list[list[str]], dict[str, Any]]:
    """Rows for the comparison table (API drift, then each failure kind, as percent of replies) and the
    same numbers for comparison.yaml; a run logged before `failures` existed shows "-"."""
    rows: list[list[str]] = []
    out: dict[str, Any] = {}
    if "api_drift_rate" in a or "api_drift_rate" in b:
        va, vb = a.get("api_drift_rate"), b.get("api_drift_rate")
        rows.append(["API drift (removed APIs) %", _fmt(va), _fmt(vb), _change(va, vb)])
        out["api_drift_rate"] = {"a": va, "b": vb, "change": None if None in (va, vb) else round(vb - va, 2)}
    fa, fb = a.get("failures") or {}, b.get("failures") or {}
    for kind in sorted(set(fa) | set(fb), key=lambda k: -(fa.get(k, 0) + fb.get(k, 0))):
        pa = _pct(fa.get(kind, 0), int(a.get("num_tests") or 0)) if "failures" in a else None
        pb = _pct(fb.get(kind, 0), int(b.get("num_tests") or 0)) if "failures" in b else None
        rows.append([f"failure: {kind} %", _fmt(pa), _fmt(pb), _change(pa, pb)])
        out[kind] = {"a": fa.get(kind, 0), "b": fb.get(kind, 0)}
    return rows, out


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{float(v):.1f}"


def _change(va: float | None, vb: float | None) -> str:
    return "" if va is None or vb is None else f"{float(vb) - float(va):+.1f}"


def load_run(run_dir: Path) -> dict:
    log_path = run_dir / "validation_log.yaml"
    if not log_path.exists():
        raise FileNotFoundError(f"{log_path} not found (run `python -m evaluation run` or `score` first)")
    data = yaml.safe_load(log_path.read_text())
    if not isinstance(data, dict) or "verification_rate" not in data:
        raise ValueError(f"{log_path} is not a validation log")
    return data


def write_comparison(a_dir: Path, b_dir: Path, out_dir: Path, labels: tuple[str, str] | None = None) -> dict:
    """Base (A) vs fine-tuned (B): table, plot, comparison.yaml. Improvement = B - A in points."""
    a, b = load_run(a_dir), load_run(b_dir)
    la, lb = labels or (a.get("model") or a_dir.name, b.get("model") or b_dir.name)
    if la == lb:
        la, lb = f"A: {la}", f"B: {lb}"
    th = Thresholds(**(b.get("thresholds") or {}))
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_rates(out_dir / "comparison.png", {la: a, lb: b}, th, "base vs fine-tuned")
    rows = [["metric", la, lb, "change (points)"]]
    comp: dict[str, Any] = {"a": {"dir": str(a_dir), "model": a.get("model")},
                            "b": {"dir": str(b_dir), "model": b.get("model")}, "metrics": {}}
    for mk, _, name in METRICS + (("constraint_rate", None, "Constraint satisfied"),):
        va, vb = float(a.get(mk, 0.0)), float(b.get(mk, 0.0))
        rows.append([name, f"{va:.1f}", f"{vb:.1f}", f"{vb - va:+.1f}"])
        comp["metrics"][mk] = {"a": va, "b": vb, "change": round(vb - va, 2)}
    rows.append(["passed", str(a.get("passed")), str(b.get("passed")), ""])
    failure_rows, comp["failures"] = compare_failures(a, b)  # API drift and failure kinds, A vs B
    rows.extend(failure_rows)
    comp["b_better_verification"] = comp["metrics"]["verification_rate"]["change"] > 0
    (out_dir / "comparison.yaml").write_text(yaml.safe_dump(comp, sort_keys=False))
    (out_dir / "report.md").write_text(
        f"# Comparison\n\nA: `{a_dir}` ({a.get('num_tests')} replies)  \nB: `{b_dir}` ({b.get('num_tests')} replies)\n\n"
        f"{_table(rows)}\n![comparison](comparison.png)\n\n"
        f"B {'beats' if comp['b_better_verification'] else 'does not beat'} A on verified circuits.\n")
    return comp
