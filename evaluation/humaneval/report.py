"""humaneval_log.yaml, results.jsonl, samples.jsonl, report.md and pass_at_k.png for one HumanEval run.

humaneval_log.yaml fields (a contract, read by `compare`): variant, model, num_tasks, num_samples, pass_at
(k -> percent, k in 1, 5, 10 with k <= n), by_difficulty (basic / intermediate / difficult -> pass_at),
excluded (task_id + reason), pass_at_all_tasks (excluded tasks counted as failed), failures (kind -> count).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import yaml

from evaluation.failures import EXCLUDED as EXCLUDED_FAILURE
from evaluation.failures import JUDGE_ERROR
from evaluation.humaneval.passk import KS, pass_at_table
from evaluation.humaneval.tasks import DIFFICULTIES, tasks_by_id
from evaluation.report import md


def _counts(results: list[dict]) -> dict[str, tuple[int, int]]:
    """task_id -> (n, c) over the samples with a verdict (judge errors are no verdict on the model)."""
    n: dict[str, int] = defaultdict(int)
    c: dict[str, int] = defaultdict(int)
    for r in results:
        if r.get("failure") == JUDGE_ERROR:
            continue
        n[r["task_id"]] += 1
        c[r["task_id"]] += bool(r.get("passed"))
    return {t: (n[t], c[t]) for t in n}


def summarize(results: list[dict], variant: str, *, model: str | None) -> dict[str, Any]:
    """The log's figures; tasks in `results` only (a run on some tasks reports those)."""
    tasks = tasks_by_id(variant)
    present = list(dict.fromkeys(r["task_id"] for r in results))
    excluded = {r["task_id"]: r.get("error") for r in results if r.get("failure") == EXCLUDED_FAILURE}
    counts = _counts(results)
    scored = {t: nc for t, nc in counts.items() if t not in excluded}
    all_tasks = {t: (n, 0) if t in excluded else (n, c) for t, (n, c) in counts.items()}
    per_task = Counter(r["task_id"] for r in results)
    by_difficulty = {}
    for d in DIFFICULTIES:
        sub = [nc for t, nc in scored.items() if tasks[t].difficulty == d]
        if sub:
            by_difficulty[d] = pass_at_table(sub)
    failures = Counter(r["failure"] for r in results if r.get("failure"))
    pass_at = pass_at_table(list(scored.values()))
    short = [t for t, (n, _) in scored.items() if n < (max(per_task.values()) if per_task else 0)]
    omitted = {k: f"{len(short)} task(s) have fewer than {k} judged samples (judge errors), e.g. {short[0]}"
               for k in KS if k <= (max(per_task.values()) if per_task else 0) and k not in pass_at and short}
    return {
        "variant": variant,
        "model": model,
        "num_tasks": len(present),
        "num_samples": min(per_task.values()) if per_task else 0,
        "pass_at": pass_at,
        "by_difficulty": by_difficulty,
        "excluded": [{"task_id": t, "reason": why} for t, why in excluded.items()],
        "pass_at_all_tasks": pass_at_table(list(all_tasks.values())),
        "failures": dict(sorted(failures.items(), key=lambda kv: (-kv[1], kv[0]))),
        "num_tasks_scored": len(scored),
        "num_samples_max": max(per_task.values()) if per_task else 0,
        "num_judge_errors": failures.get(JUDGE_ERROR, 0),
        "tasks_solved": sum(c > 0 for _, c in scored.values()),
        "pass_at_omitted": omitted,  # k -> why pass@k is missing although every task got k samples
    }


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=True) + "\n")
    os.replace(tmp, path)
    return path


def write_log(out_dir: Path, summary: dict, extra: dict | None = None) -> Path:
    data = dict(summary)
    data["time"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    data.update(extra or {})
    path = out_dir / "humaneval_log.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def plot_pass_at(out_dir: Path, summary: dict) -> Path:
    """pass_at_k.png: pass@k overall, counting excluded tasks as failed, and by difficulty."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {"scored tasks": summary["pass_at"], "all tasks (excluded = failed)": summary["pass_at_all_tasks"]}
    series.update({d: v for d, v in summary["by_difficulty"].items()})
    ks = [k for k in KS if k in summary["pass_at"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(1, len(series))
    for j, (label, table) in enumerate(series.items()):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(ks))]
        ax.bar(xs, [table.get(k, 0.0) for k in ks], width, label=label)
    ax.set_xticks(range(len(ks)), [f"pass@{k}" for k in ks])
    ax.set_ylim(0, 100)
    ax.set_ylabel("percent")
    ax.set_title(f"Qiskit HumanEval ({summary['variant']}): {summary['model'] or 'model'}, "
                 f"{summary['num_tasks_scored']} tasks x {summary['num_samples']} samples")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "pass_at_k.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _table(rows: list[tuple[str, dict]], ks: list[int]) -> list[str]:
    lines = ["| | " + " | ".join(f"pass@{k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for label, table in rows:
        lines.append(f"| {label} | " + " | ".join(f"{table[k]:.2f} %" if k in table else "-" for k in ks) + " |")
    return lines


def write_report(out_dir: Path, summary: dict, results: list[dict], extra: dict | None = None) -> Path:
    ks = [k for k in KS if k in summary["pass_at"]] or [1]
    rows = [("scored tasks", summary["pass_at"]), ("all tasks, excluded = failed", summary["pass_at_all_tasks"])]
    rows += [(d, t) for d, t in summary["by_difficulty"].items()]
    lines = [f"# Qiskit HumanEval ({summary['variant']}): {md(summary['model'] or '')}", "",
             f"{summary['num_tasks']} tasks ({summary['num_tasks_scored']} scored, {len(summary['excluded'])} excluded), "
             f"{summary['num_samples']} sample(s) per task; {summary['tasks_solved']} tasks solved at least once.", ""]
    lines += _table(rows, ks)
    lines += [f"\npass@{k} not reported: {why}." for k, why in summary.get("pass_at_omitted", {}).items()]
    lines += ["", "pass@k: the unbiased estimator of Chen et al. (2021), mean over tasks (docs/humaneval.md).", "",
              "## Failures (all samples)", ""]
    lines += [f"- {md(k)}: {v}" for k, v in summary["failures"].items()] or ["- none"]
    lines += ["", "## Excluded tasks", ""]
    lines += [f"- {e['task_id']}: {e['reason']}" for e in summary["excluded"]] or ["- none"]
    first_error: dict[str, dict] = {}
    solved = {r["task_id"] for r in results if r.get("passed")}
    for r in results:
        if r["task_id"] not in solved and r.get("failure") != EXCLUDED_FAILURE:
            first_error.setdefault(r["task_id"], r)
    lines += ["", "## Tasks never passed", ""]
    lines += [f"- {md(t)}: {md(r['failure'])}: {md(r.get('error'), 160)}" for t, r in first_error.items()] or ["- none"]
    for key, value in (extra or {}).items():
        lines.append(f"\n{key}: {value}")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_all(out_dir: Path, results: list[dict], variant: str, *, model: str | None,
              extra: dict | None = None) -> dict:
    """results.jsonl, humaneval_log.yaml, report.md, pass_at_k.png; returns the summary."""
    from evaluation.humaneval.scoring import RESULT_FIELDS

    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "results.jsonl", [{k: r.get(k) for k in RESULT_FIELDS} for r in results])
    summary = summarize(results, variant, model=model)
    write_log(out_dir, summary, extra)
    write_report(out_dir, summary, results)
    plot_pass_at(out_dir, summary)
    return summary
