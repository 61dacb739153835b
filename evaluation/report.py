"""validation_log.yaml, report.md and PNG plots for one run; side-by-side comparison of two runs."""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
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


def _pct(num: int, den: int) -> float | None:
    """Percent, or None (n/a) for an empty denominator: never a 0.0 that reads as a measured rate."""
    return round(100.0 * num / den, 2) if den else None


def scored(r: dict) -> bool:
    """A reply the rates count: the endpoint answered it and the judge reached the seed's verdicts
    (verification and, for a verified circuit, the BP check). A judge error in the optional VQE alone
    leaves those verdicts standing: it is still listed under judge_errors (and exits 2)."""
    if r.get("request_error"):
        return False
    if not r.get("judge_error"):
        return True
    return r.get("verification_pass") is not None and r.get("bp_status") != "judge_error"


def undecided(r: dict) -> bool:
    """A verified circuit whose barren-plateau verdict is undecided (`bp_basis: undecided`, `bp_free`
    null): not BP-free in `bp_free_rate`'s numerator, in its denominator (the seed's rate is over every
    scored reply), and counted apart in `bp_undecided`."""
    return r.get("bp_basis") == "undecided" and r.get("bp_free") is None and r.get("verification_pass") is True


def _rates(results: list[dict]) -> dict[str, Any]:
    counted = [r for r in results if scored(r)]
    n = len(counted)
    constrained = [r for r in counted if r.get("constraint_satisfied") is not None]
    return {
        "num_tests": n,
        "syntax_rate": _pct(sum(r.get("syntax_valid") is True for r in counted), n),
        "verification_rate": _pct(sum(r.get("verification_pass") is True for r in counted), n),
        "bp_free_rate": _pct(sum(r.get("bp_free") is True for r in counted), n),
        "bp_undecided": sum(undecided(r) for r in counted),
        "bp_undecided_rate": _pct(sum(undecided(r) for r in counted), n),
        "constraint_rate": _pct(sum(r["constraint_satisfied"] is True for r in constrained), len(constrained)),
    }


def _listed(results: list[dict], key: str) -> list[dict[str, Any]]:
    return [{"id": r.get("id"), "reason": " ".join(str(r[key]).split())} for r in results if r.get(key)]


def _met(rate: float | None, target: float) -> bool:
    return rate is not None and rate > target


def summarize(results: list[dict], thresholds: Thresholds) -> dict[str, Any]:
    """The seed's rates over the scored replies (judge errors and request errors left out of every
    denominator, and listed), by Hamiltonian and qubit count, and the failure kinds."""
    s = _rates(results)
    s["passed"] = bool(s["num_tests"] > 0 and _met(s["syntax_rate"], thresholds.syntax)
                       and _met(s["verification_rate"], thresholds.verification)
                       and _met(s["bp_free_rate"], thresholds.bp_free))
    s["num_replies"] = len(results)
    s["judge_errors"] = _listed(results, "judge_error")
    s["request_errors"] = _listed(results, "request_error")
    s["by_hamiltonian"] = {h: _rates([r for r in results if r.get("hamiltonian") == h])
                           for h in HAMILTONIANS if any(r.get("hamiltonian") == h for r in results)}
    sizes = sorted({int(r["num_qubits"]) for r in results if r.get("num_qubits") is not None})
    s["by_num_qubits"] = {n: _rates([r for r in results if r.get("num_qubits") == n]) for n in sizes}
    errors: dict[str, int] = {}
    for r in filter(scored, results):
        if r.get("error"):
            kind = str(r["error"]).split(":")[0][:60]
            errors[kind] = errors.get(kind, 0) + 1
    s["errors"] = dict(sorted(errors.items(), key=lambda kv: -kv[1])[:15])
    s.update(failure_summary(list(filter(scored, results))))
    s["bp_unsupported"] = sum(r.get("bp_status") == "unsupported" for r in filter(scored, results))
    s["bp_undecided_reasons"] = [{"id": r.get("id"), "reason": " ".join(str(r.get("bp_scaling_note") or "").split())}
                                 for r in filter(scored, results) if undecided(r)]
    rebuild: dict[str, int] = {}
    for r in filter(scored, results):
        if r.get("bp_rebuild"):
            rebuild[str(r["bp_rebuild"])] = rebuild.get(str(r["bp_rebuild"]), 0) + 1
    s["bp_rebuild_counts"] = dict(sorted(rebuild.items()))
    return s


def failure_summary(results: list[dict]) -> dict[str, Any]:
    """`failures`: kind -> count over the replies that failed (docs/evaluation.md, "failure"), most common
    first; `api_drift_rate`: percent of the (scored) replies whose code used an API that Qiskit removed
    (`removed_apis` not empty); `removed_apis`: API name -> number of replies using it."""
    from collections import Counter

    kinds = Counter(str(r["failure"]) for r in results if r.get("failure"))
    used = Counter(name for r in results for name in (r.get("removed_apis") or []))
    return {"failures": dict(sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))),
            "api_drift_rate": _pct(sum(bool(r.get("removed_apis")) for r in results), len(results)),
            "removed_apis": dict(sorted(used.items(), key=lambda kv: (-kv[1], kv[0])))}


def finite_or_null(value: Any) -> Any:
    """The same structure with every NaN/inf float replaced by None (outputs hold finite floats or null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    return value


def parse_jsonl(text: str, path: Path) -> list[dict]:
    """The JSON objects of a JSON-lines text (blank lines skipped); ValueError naming path:line otherwise.
    Lines end at "\n" only: a raw U+2028 or U+0085 inside a string (files written before the writers were
    ASCII-only) is part of its line, not a break (str.splitlines would split there)."""
    rows = []
    for i, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{i}: not JSON ({exc.msg})") from None
    return rows


def write_results(out_dir: Path, results: list[dict]) -> Path:
    path = out_dir / "results.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in results:
            fh.write(json.dumps(finite_or_null(r), ensure_ascii=True, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def write_validation_log(out_dir: Path, summary: dict, *, model: str | None, endpoint: str | None,
                         thresholds: Thresholds, extra: dict | None = None) -> Path:
    log = {k: summary[k] for k in ("syntax_rate", "verification_rate", "bp_free_rate", "num_tests", "passed")}
    log["result"] = result_of(summary)
    log.update({
        "model": model, "endpoint": endpoint, "thresholds": asdict(thresholds),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "constraint_rate": summary["constraint_rate"], "num_replies": summary["num_replies"],
        "num_judge_errors": len(summary["judge_errors"]), "judge_errors": summary["judge_errors"],
        "num_request_errors": len(summary["request_errors"]), "request_errors": summary["request_errors"],
        "by_hamiltonian": summary["by_hamiltonian"], "by_num_qubits": summary["by_num_qubits"],
        "errors": summary["errors"], "failures": summary["failures"], "bp_unsupported": summary["bp_unsupported"],
        "bp_undecided": summary["bp_undecided"], "bp_undecided_rate": summary["bp_undecided_rate"],
        "bp_undecided_reasons": summary["bp_undecided_reasons"], "bp_rebuild_counts": summary["bp_rebuild_counts"],
    })
    log.update({k: summary[k] for k in ("failures", "api_drift_rate", "removed_apis") if k in summary})
    log.update(extra or {})
    path = out_dir / "validation_log.yaml"
    path.write_text(yaml.safe_dump(finite_or_null(log), sort_keys=False))
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
        vals = [s.get(k) for k, _, _ in METRICS]
        bars = ax.bar(xs, [v or 0.0 for v in vals], width, label=label)
        ax.bar_label(bars, labels=["n/a" if v is None else f"{v:.0f}" for v in vals], fontsize=8)
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
            raw = [summary[key][g][mk] for g in groups]
            bars = ax.bar(xs, [0.0 if v is None else v for v in raw], 0.27, label=name)
            ax.bar_label(bars, labels=["n/a" if v is None else "" for v in raw], fontsize=7)  # never a silent 0
        ax.set_xticks(range(len(groups)), [str(g) for g in groups])
        ax.set_title(title)
    axes[0].set_ylabel("% of replies")
    axes[0].set_ylim(0, 105)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u2069\ufeff]")
_MARKDOWN = re.compile(r"([\\`*_\[\]<>#|~!])")


def plain(text: Any, limit: int = 300) -> str:
    """Reply-controlled text as one line safe for a terminal or a report: no escape sequences, control, bidi or
    line-separator characters, whitespace collapsed, lone surrogates written as \\udXXX, at most `limit` long."""
    s = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    s = _INVISIBLE.sub(" ", _ESCAPES.sub("", s))
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def md(text: Any, limit: int = 300) -> str:
    """plain() with markdown's metacharacters escaped: it cannot open a heading, a table cell, emphasis, code,
    a link or HTML in report.md."""
    return _MARKDOWN.sub(r"\\\1", plain(text, limit))


def result_of(summary: dict) -> str:
    """"passed", "failed", or "not_decided" while any reply could not be judged (judge errors are out of every
    rate: a reply that crashes its judge must not leave a PASSED behind)."""
    if summary.get("judge_errors"):
        return "not_decided"
    return "passed" if summary.get("passed") else "failed"


def result_words(summary: dict) -> str:
    """The result for a person: PASSED / FAILED / "NOT DECIDED: N judge errors"."""
    n = len(summary.get("judge_errors") or [])
    if n:
        return f"NOT DECIDED: {n} judge error{'s' if n != 1 else ''}"
    return "PASSED" if summary.get("passed") else "FAILED"


def fmt_rate(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.1f}"


def _table(rows: list[list[str]]) -> str:
    head = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
    return head + "".join("| " + " | ".join(r) + " |\n" for r in rows[1:])


def write_report(out_dir: Path, summary: dict, thresholds: Thresholds, *, model: str | None,
                 endpoint: str | None) -> Path:
    plot_rates(out_dir / "rates.png", {model or "replies": summary}, thresholds, f"QuantumMind evaluation: {model or ''}")
    plot_breakdown(out_dir / "breakdown.png", summary)
    rows = [["metric", "rate %", "target %", "met"]]
    for mk, tk, name in METRICS:
        rows.append([name, fmt_rate(summary[mk]), f"> {getattr(thresholds, tk):g}",
                     "yes" if _met(summary[mk], getattr(thresholds, tk)) else "no"])
    rows.append(["Constraint satisfied (of constrained prompts)", fmt_rate(summary["constraint_rate"]), "-", "-"])
    rows.append([f"BP undecided ({summary['bp_undecided']} verified replies; not in BP-free)",
                 fmt_rate(summary["bp_undecided_rate"]), "-", "-"])
    brk = [["group", "n", "syntax %", "verification %", "BP-free %", "BP undecided %"]]
    for key in ("by_hamiltonian", "by_num_qubits"):
        for g, s in summary[key].items():
            brk.append([str(g), str(s["num_tests"]), fmt_rate(s["syntax_rate"]), fmt_rate(s["verification_rate"]),
                        fmt_rate(s["bp_free_rate"]), fmt_rate(s["bp_undecided_rate"])])
    errs = "\n".join(f"- {md(k)}: {v}" for k, v in summary["errors"].items()) or "- none"
    fails = _failures_section(summary)
    undecided = "".join(f"- {md(e['id'])}: {md(e['reason'])}\n" for e in summary["judge_errors"] + summary["request_errors"])
    undecided_text = (f"## Not scored ({len(summary['judge_errors'])} judge errors, "
                      f"{len(summary['request_errors'])} request errors)\n\n{undecided}\n" if undecided else "")
    text = (f"# Evaluation report\n\nModel: {md(model)}  \nEndpoint: {md(endpoint)}  \n"
            f"Replies: {summary['num_replies']} ({summary['num_tests']} scored)  \n"
            f"Result: **{result_words(summary)}** (all three targets must be met"
            f"{'; judge errors leave the rates undecided' if summary['judge_errors'] else ''})\n\n"
            f"{_table(rows)}\n![rates](rates.png)\n\n{undecided_text}{_bp_undecided_section(summary)}## Breakdown\n\n{_table(brk)}\n"
            f"![breakdown](breakdown.png)\n\n{fails}## Most common failure reasons\n\n{errs}\n\nRules: see docs/evaluation.md.\n")
    path = out_dir / "report.md"
    path.write_text(text, encoding="utf-8")
    return path


def _bp_undecided_section(summary: dict) -> str:
    """report.md: the replies whose barren-plateau verdict is undecided, and why; how the rebuilds went."""
    if not summary.get("bp_undecided_reasons") and not summary.get("bp_rebuild_counts"):
        return ""
    lines = "".join(f"- {md(e['id'])}: {md(e['reason'] or 'no reason recorded')}\n" for e in summary["bp_undecided_reasons"])
    rebuild = ", ".join(f"{k} {v}" for k, v in summary.get("bp_rebuild_counts", {}).items()) or "none"
    return (f"## Barren-plateau verdict undecided ({summary['bp_undecided']})\n\nCounted as not BP-free in the "
            f"BP-free rate (its denominator is every scored reply); docs/evaluation.md says why.\n"
            f"Rebuild at larger sizes: {rebuild}.\n\n{lines}\n")


def _failures_section(summary: dict) -> str:
    """report.md's "Failures" section: the failure kinds and the API drift."""
    if "failures" not in summary:
        return ""
    rows = [["failure", "replies"]] + [[md(k), str(v)] for k, v in summary["failures"].items()]
    kinds = _table(rows) if len(rows) > 1 else "No reply failed.\n"
    apis = ", ".join(f"{md(k)} ({v})" for k, v in (summary.get("removed_apis") or {}).items()) or "none"
    return (f"## Failures\n\n{kinds}\nAPI drift: **{fmt_rate(summary['api_drift_rate'])} %** of replies use an API "
            f"that Qiskit removed ({apis}).\n\n")


def load_run(run_dir: Path) -> dict:
    log_path = run_dir / "validation_log.yaml"
    if not log_path.exists():
        raise FileNotFoundError(f"{log_path} not found (run `python -m evaluation run` or `score` first)")
    data = yaml.safe_load(log_path.read_text())
    if not isinstance(data, dict) or "verification_rate" not in data:
        raise ValueError(f"{log_path} is not a validation log")
    return data
