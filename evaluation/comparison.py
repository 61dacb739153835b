"""Base (A) vs fine-tuned (B): comparison.yaml, report.md and comparison.png, with paired statistics.

Two kinds of output directory are compared:
- circuit evaluations (`validation_log.yaml` + `results.jsonl` from `run`/`score`): for each of syntax_rate,
  verification_rate and bp_free_rate the Wilson 95 % interval of each rate and the exact McNemar test on the
  replies paired by `id`;
- HumanEval runs (`humaneval_log.yaml` + `results.jsonl` with task_id, sample, passed, failure): pass@k and
  pass@1 by difficulty side by side, and per-task pass@1 (the mean over samples) paired by task_id, with a
  seeded paired bootstrap interval and a sign-flip permutation p-value for the difference.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from evaluation import stats
from evaluation.failures import EXCLUDED, JUDGE_ERROR
from evaluation.report import METRICS, Thresholds, _pct, _plt, _table, fmt_rate, load_run, parse_jsonl, scored

HUMANEVAL_LOG = "humaneval_log.yaml"
BOOTSTRAP_SEED = 0

# How each circuit metric is decided for one reply (the same rule as the rates in validation_log.yaml).
OUTCOMES: dict[str, Callable[[dict], bool]] = {
    "syntax_rate": lambda r: bool(r.get("syntax_valid")),
    "verification_rate": lambda r: bool(r.get("verification_pass")),
    "bp_free_rate": lambda r: r.get("bp_free") is True,
}
# "B <verb> 9 more of 45 prompts"
VERBS = {"syntax_rate": "writes valid syntax for", "verification_rate": "verifies",
         "bp_free_rate": "builds a BP-free circuit for"}


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (the comparison pairs replies by id from it)")
    return parse_jsonl(path.read_text(encoding="utf-8"), path)


def is_humaneval_dir(path: Path) -> bool:
    return (path / HUMANEVAL_LOG).is_file()


def _r(x: float | None, nd: int = 2) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def _ci(ci: tuple[float, float] | None) -> list[float] | None:
    return None if ci is None else [_r(ci[0]), _r(ci[1])]


def fmt_p(p: float) -> str:
    """Two significant digits, three near 0.05 so the text never reads 'p = 0.05' for a significant result."""
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3g}" if f"{p:.2g}" == "0.05" else f"p = {p:.2g}"


def _labels(a: dict, b: dict, a_dir: Path, b_dir: Path, labels: tuple[str, str] | None) -> tuple[str, str]:
    la, lb = labels or (a.get("model") or a_dir.name, b.get("model") or b_dir.name)
    return (f"A: {la}", f"B: {lb}") if la == lb else (str(la), str(lb))


# ------------------------------------------------------------------------------------------ comparability

# Sampling settings both kinds of run record in their log; a difference is worth a warning, not a refusal.
SAMPLING_KEYS = ("temperature", "seed", "max_tokens", "api", "num_samples")


def sampling_warning(a: dict, b: dict) -> list[str]:
    """One line naming every sampling setting the two logs record differently (none: empty list)."""
    diffs = [f"{k} {a[k]!r} vs {b[k]!r}" for k in SAMPLING_KEYS if k in a and k in b and a[k] != b[k]]
    if not diffs:
        return []
    return [f"A and B were sampled differently ({', '.join(diffs)}): part of any difference is the settings, "
            "not the model"]


def _prompt_key(r: dict) -> tuple:
    return (r.get("hamiltonian"), r.get("num_qubits"), r.get("constraint"))


def circuit_pairing_warnings(res_a: list[dict], res_b: list[dict]) -> list[str]:
    """Refuse (ValueError) runs that share no prompt id or ask different prompts under one id; warn
    when the prompt sets differ in size (only the shared ids are paired)."""
    pa = {str(r.get("id")): _prompt_key(r) for r in res_a}
    pb = {str(r.get("id")): _prompt_key(r) for r in res_b}
    shared = sorted(pa.keys() & pb.keys())
    if not shared:
        raise ValueError("A and B have no prompt id in common: nothing to pair (were they run on the same prompts?)")
    differ = [i for i in shared if pa[i] != pb[i]]
    if differ:
        i = differ[0]
        raise ValueError(f"A and B asked different prompts under the same id ({len(differ)} of {len(shared)}; "
                         f"{i}: {pa[i]} vs {pb[i]}): they come from different prompt sets")
    if len(shared) < max(len(pa), len(pb)):
        return [f"A has {len(pa)} replies and B {len(pb)}: only the {len(shared)} prompts both answered are "
                "paired; each rate is over its own run's replies (rerun with the same --num-tests to compare "
                "like with like)"]
    return []


# ----------------------------------------------------------------------------------------------- circuits

def _outcomes_by_id(results: list[dict], path: Path) -> dict[str, dict[str, bool]]:
    """metric -> {id: success} over the scored replies (judge and request errors have no outcome, as in
    the rates); duplicate ids would make the pairing ambiguous, so they are refused."""
    ids = [str(r.get("id")) for r in results]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate ids, cannot pair replies")
    counted = [r for r in results if scored(r)]
    return {mk: {str(r.get("id")): fn(r) for r in counted} for mk, fn in OUTCOMES.items()}


def _prompt_key(r: dict) -> str:
    """The prompt a reply answers (the seed's combination), whatever its id: `--num-tests` above 45 repeats them."""
    return f"{r.get('hamiltonian')}|{r.get('num_qubits')}|{r.get('constraint')}"


def _outcomes_by_prompt(results: list[dict]) -> dict[str, dict[str, list[bool]]]:
    """metric -> {prompt: [success of each scored reply to it]}."""
    counted = [r for r in results if scored(r)]
    out: dict[str, dict[str, list[bool]]] = {}
    for mk, fn in OUTCOMES.items():
        per: dict[str, list[bool]] = {}
        for r in counted:
            per.setdefault(_prompt_key(r), []).append(bool(fn(r)))
        out[mk] = per
    return out


def prompt_level_stats(a: dict[str, list[bool]], b: dict[str, list[bool]], seed: int = 0) -> dict[str, Any]:
    """The comparison that respects repeated prompts: per prompt (in both runs), each run's success rate over
    its replies to it; the sign-flip permutation test on the per-prompt differences (replies to one prompt
    are not independent pairs, so the prompts are the units). `repeated`: some prompt has several replies."""
    keys = sorted(set(a) & set(b))
    ma = [sum(a[k]) / len(a[k]) for k in keys]
    mb = [sum(b[k]) / len(b[k]) for k in keys]
    repeated = any(len(v) > 1 for v in (*a.values(), *b.values()))
    if not keys:
        return {"n_prompts": 0, "repeated": repeated, "a_mean": None, "b_mean": None, "difference": None,
                "p_value": None, "significant": False}
    p = stats.paired_permutation_p(ma, mb, seed=seed)
    return {"n_prompts": len(keys), "repeated": repeated, "a_mean": _r(100 * sum(ma) / len(ma)),
            "b_mean": _r(100 * sum(mb) / len(mb)), "difference": _r(100 * (sum(mb) - sum(ma)) / len(keys)),
            "p_value": float(p), "significant": bool(p < stats.ALPHA)}


def metric_stats(a: dict[str, bool], b: dict[str, bool]) -> dict[str, Any]:
    """Wilson intervals of both rates (the scored replies of each run), McNemar on the ids both runs have."""
    paired = stats.pair_outcomes(a, b)
    return {"a_ci95": _ci(stats.wilson_interval(sum(a.values()), len(a))),
            "b_ci95": _ci(stats.wilson_interval(sum(b.values()), len(b))),
            "paired": paired.to_dict(), "significant": paired.significant,
            "prompts_needed": stats.sample_size_for(paired)}


def metric_sentence(mk: str, m: dict) -> str:
    """'B verifies 9 more of 45 prompts than A (...); p = 0.02; unlikely to be chance.' plus the sample size."""
    pr = m["paired"]
    net, n = pr["b_only"] - pr["a_only"], pr["n"]
    detail = f"B only {pr['b_only']}, A only {pr['a_only']}, both {pr['both']}, neither {pr['neither']}"
    if net == 0:
        head = f"B {VERBS[mk]} as many of the {n} paired prompts as A ({detail})"
    else:
        head = f"B {VERBS[mk]} {abs(net)} {'more' if net > 0 else 'fewer'} of {n} prompts than A ({detail})"
    verdict = ("no difference" if net == 0 else "unlikely to be chance" if m["significant"] else "could be chance")
    text = f"{head}; {fmt_p(pr['p_value'])} (exact McNemar); {verdict}."
    pl = m.get("prompt_level") or {}
    if pl.get("repeated"):  # McNemar above treats the repeats as independent pairs: the prompts decide
        text = f"Reply level: {text} Prompt level (prompts repeat, so this test decides): over {pl['n_prompts']} " \
               f"prompts B's mean success is {fmt_rate(pl['b_mean'])} % against A's {fmt_rate(pl['a_mean'])} %; " \
               f"{'n/a' if pl['p_value'] is None else fmt_p(pl['p_value'])} (sign-flip permutation on per-prompt " \
               f"rates); {'unlikely to be chance' if pl['significant'] else 'could be chance'}."
        return text
    need = m.get("prompts_needed")
    if need is not None:
        text += (f" Detecting a difference of this size reliably (80 % power, alpha = 0.05) takes about {need}"
                 f" paired prompts; this comparison has {n}.")
    return text


def plot_comparison(path: Path, comp: dict, labels: tuple[str, str], thresholds: Thresholds) -> Path:
    """Grouped bars per metric with the Wilson 95 % intervals as error bars; dashed lines: the targets."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.38
    for j, (side, label) in enumerate(zip("ab", labels)):
        xs = [i + (j - 0.5) * width for i in range(len(METRICS))]
        raw = [comp["metrics"][mk][side] for mk, _, _ in METRICS]
        vals = [0.0 if v is None else v for v in raw]  # n/a: an empty bar labelled "n/a", never "0.0"
        cis = [comp["metrics"][mk][f"{side}_ci95"] or [v, v] for (mk, _, _), v in zip(METRICS, vals)]
        yerr = [[max(0.0, v - lo) for v, (lo, _) in zip(vals, cis)], [max(0.0, hi - v) for v, (_, hi) in zip(vals, cis)]]
        bars = ax.bar(xs, vals, width, yerr=yerr, capsize=4, label=label)
        ax.bar_label(bars, labels=[fmt_rate(v) for v in raw], fontsize=7,
                     label_type="edge" if None in raw else "center")
    for i, (mk, tk, _) in enumerate(METRICS):
        ax.hlines(getattr(thresholds, tk), i - 0.45, i + 0.45, colors="k", linestyles="dashed")
        p = comp["metrics"][mk]["paired"]["p_value"]
        ax.annotate(fmt_p(p), (i, 108), ha="center", fontsize=8)
    ax.set_xticks(range(len(METRICS)), [name for _, _, name in METRICS])
    ax.set_ylim(0, 115)
    ax.set_ylabel("% of replies (bars: 95 % Wilson; dashed: target)")
    ax.set_title("base vs fine-tuned (paired, exact McNemar)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _compare_circuits(a_dir: Path, b_dir: Path, out_dir: Path, labels: tuple[str, str] | None) -> dict:
    a, b = load_run(a_dir), load_run(b_dir)
    res_a, res_b = _read_jsonl(a_dir / "results.jsonl"), _read_jsonl(b_dir / "results.jsonl")
    oa, ob = _outcomes_by_id(res_a, a_dir / "results.jsonl"), _outcomes_by_id(res_b, b_dir / "results.jsonl")
    pa, pb = _outcomes_by_prompt(res_a), _outcomes_by_prompt(res_b)
    warnings = circuit_pairing_warnings(res_a, res_b) + sampling_warning(a, b)
    la, lb = _labels(a, b, a_dir, b_dir, labels)
    th = Thresholds(**(b.get("thresholds") or {}))
    comp: dict[str, Any] = {"kind": "circuits", "a": {"dir": str(a_dir), "model": a.get("model")},
                            "b": {"dir": str(b_dir), "model": b.get("model")}, "metrics": {},
                            "warnings": warnings}
    rows = [["metric", f"{la} (95 % CI)", f"{lb} (95 % CI)", "change (points)", "paired p", "significant"]]
    for mk, _, name in METRICS:
        va, vb = _rate(a, mk), _rate(b, mk)
        m = {"a": va, "b": vb, "change": _change(va, vb)} | metric_stats(oa[mk], ob[mk])
        m["prompt_level"] = prompt_level_stats(pa[mk], pb[mk])
        if m["prompt_level"]["repeated"]:  # replies to one prompt are not independent: the prompt-level test decides
            m["significant"] = m["prompt_level"]["significant"]
        comp["metrics"][mk] = m
        rows.append([name, f"{fmt_rate(va)} [{_span(m['a_ci95'])}]", f"{fmt_rate(vb)} [{_span(m['b_ci95'])}]",
                     _fmt_change(m["change"]), fmt_p(m["paired"]["p_value"]).removeprefix("p = "),
                     "yes" if m["significant"] else "no"])
    va, vb = _rate(a, "constraint_rate"), _rate(b, "constraint_rate")
    comp["metrics"]["constraint_rate"] = {"a": va, "b": vb, "change": _change(va, vb)}
    rows.append(["Constraint satisfied", fmt_rate(va), fmt_rate(vb), _fmt_change(_change(va, vb)), "", ""])
    va, vb = _rate(a, "bp_undecided_rate"), _rate(b, "bp_undecided_rate")  # n/a for logs written before it
    comp["metrics"]["bp_undecided_rate"] = {"a": va, "b": vb, "change": _change(va, vb)}
    rows.append(["BP undecided (not in BP-free)", fmt_rate(va), fmt_rate(vb), _fmt_change(_change(va, vb)), "", ""])
    rows.append(["passed", str(a.get("passed")), str(b.get("passed")), "", "", ""])
    failure_rows, comp["failures"] = compare_failures(a, b)  # API drift and failure kinds, A vs B
    rows.extend(row + ["", ""] for row in failure_rows)
    ver = comp["metrics"]["verification_rate"]
    comp["b_better_verification"] = (ver["change"] or 0) > 0
    comp["b_better"] = comp["b_better_verification"]
    comp["significant"] = ver["significant"]
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_comparison(out_dir / "comparison.png", comp, (la, lb), th)
    (out_dir / "comparison.yaml").write_text(yaml.safe_dump(comp, sort_keys=False))
    words = "\n".join(f"- **{name}**: {metric_sentence(mk, comp['metrics'][mk])}" for mk, _, name in METRICS)
    verdict = ("beats A on verified circuits, and the difference is unlikely to be chance"
               if b_wins(comp, require_significant=True) else
               "verifies more circuits than A, but the paired prompts do not show that this is more than chance"
               if comp["b_better"] else "does not beat A on verified circuits")
    (out_dir / "report.md").write_text(
        f"# Comparison\n\nA: `{a_dir}` ({a.get('num_tests')} replies)  \nB: `{b_dir}` ({b.get('num_tests')} replies)"
        f"\n\n{_warning_lines(warnings)}{_table(rows)}\n![comparison](comparison.png)\n\n## Is the difference real?\n\n{words}\n\n"
        f"B {verdict}.\n\n{METHOD_NOTE}\n")
    return comp


METHOD_NOTE = (
    "How to read this: intervals are 95 % Wilson score intervals of each rate over that run's scored replies (judge and request errors have no verdict). "
    "The test pairs the replies by prompt `id` (the same prompt, and with the same `--seed` the same sampling "
    "seed) and applies the exact two-sided McNemar test: only prompts where exactly one model succeeds count, "
    "and p is the chance of a split at least that lopsided if both models were equally good. Significant means "
    "p < 0.05. The prompts needed come from Connor (1987, Biometrics 43:207-211) at the observed discordant "
    "proportions, 80 % power, alpha = 0.05, and never fewer than the exact test needs to reach p < 0.05 at all "
    "(6 discordant pairs). When prompts repeat (`--num-tests` above 45, or several runs' replies "
    "to one prompt), replies to one prompt are not independent pairs: each prompt's success rate is compared "
    "instead (sign-flip permutation test on the per-prompt differences), and that test decides significance. "
    "See docs/evaluation.md.")


def _warning_lines(warnings: list[str]) -> str:
    return "".join(f"**Warning**: {w}.\n\n" for w in warnings)


def compare_failures(a: dict, b: dict) -> tuple[list[list[str]], dict[str, Any]]:
    """Rows for the comparison table (API drift, then each failure kind, as percent of replies) and the
    same numbers for comparison.yaml; a run logged before `failures` existed shows "n/a"."""
    rows: list[list[str]] = []
    out: dict[str, Any] = {}
    if "api_drift_rate" in a or "api_drift_rate" in b:
        va, vb = a.get("api_drift_rate"), b.get("api_drift_rate")
        rows.append(["API drift (removed APIs) %", fmt_rate(va), fmt_rate(vb), _fmt_change(_change(va, vb))])
        out["api_drift_rate"] = {"a": va, "b": vb, "change": _change(va, vb)}
    fa, fb = a.get("failures") or {}, b.get("failures") or {}
    for kind in sorted(set(fa) | set(fb), key=lambda k: -(fa.get(k, 0) + fb.get(k, 0))):
        pa = _pct(fa.get(kind, 0), int(a.get("num_tests") or 0)) if "failures" in a else None
        pb = _pct(fb.get(kind, 0), int(b.get("num_tests") or 0)) if "failures" in b else None
        rows.append([f"failure: {kind} %", fmt_rate(pa), fmt_rate(pb), _fmt_change(_change(pa, pb))])
        out[kind] = {"a": fa.get(kind, 0), "b": fb.get(kind, 0)}
    return rows, out


def _rate(log: dict, key: str) -> float | None:
    """A rate from a validation log; None (n/a: empty denominator) stays None, never 0."""
    v = log.get(key)
    return None if v is None else float(v)


def _change(va: float | None, vb: float | None) -> float | None:
    return None if va is None or vb is None else round(vb - va, 2)


def _fmt_change(change: float | None) -> str:
    return "n/a" if change is None else f"{change:+.1f}"


def _span(ci: list[float] | None) -> str:
    return "-" if ci is None else f"{ci[0]:.1f}, {ci[1]:.1f}"


# ---------------------------------------------------------------------------------------------- humaneval

def load_humaneval(run_dir: Path) -> dict:
    path = run_dir / HUMANEVAL_LOG
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (run `python -m evaluation humaneval run` or `score` first)")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or "pass_at" not in data:
        raise ValueError(f"{path} is not a humaneval log")
    return data


def per_task_pass_at_1(results: list[dict], path: Path) -> dict[str, float]:
    """task_id -> mean of `passed` over its samples, in percent; tasks with an `excluded` sample are left out,
    and so are samples the judge could not decide (`judge_error`: no verdict, as in pass@k)."""
    by_task: dict[str, list[bool]] = {}
    excluded: set[str] = set()
    for r in results:
        if "task_id" not in r or "passed" not in r:
            raise ValueError(f"{path}: every row needs task_id and passed")
        tid = str(r["task_id"])
        if r.get("failure") == EXCLUDED:
            excluded.add(tid)
        if r.get("failure") == JUDGE_ERROR:
            continue
        by_task.setdefault(tid, []).append(bool(r["passed"]))
    return {t: 100.0 * sum(v) / len(v) for t, v in by_task.items() if t not in excluded}


def _by_k(d: dict | None) -> dict[str, float]:
    return {str(k): float(v) for k, v in (d or {}).items() if v is not None}


def _side_by_side(a: dict[str, float], b: dict[str, float]) -> dict[str, dict[str, float]]:
    return {k: {"a": a[k], "b": b[k], "change": round(b[k] - a[k], 2)} for k in a if k in b}


def _mean_ci(x: np.ndarray) -> list[float] | None:
    if x.size == 0:
        return None
    if np.ptp(x) == 0:
        return [_r(x[0]), _r(x[0])]
    from scipy.stats import bootstrap

    res = bootstrap((x,), np.mean, vectorized=True, method="percentile", rng=np.random.default_rng(BOOTSTRAP_SEED))
    return [_r(res.confidence_interval.low), _r(res.confidence_interval.high)]


def humaneval_paired(a: dict[str, float], b: dict[str, float]) -> dict[str, Any]:
    """Per-task pass@1 paired by task_id: mean difference, bootstrap 95 % interval, permutation p-value."""
    tasks = sorted(a.keys() & b.keys())
    if not tasks:
        raise ValueError("the two humaneval runs have no task in common")
    xa, xb = np.array([a[t] for t in tasks]), np.array([b[t] for t in tasks])
    diff, lo, hi = stats.paired_bootstrap(xa, xb, seed=BOOTSTRAP_SEED)
    p = stats.paired_permutation_p(xa, xb, seed=BOOTSTRAP_SEED)
    return {"n": len(tasks), "a_pass_at_1": _r(float(xa.mean())), "b_pass_at_1": _r(float(xb.mean())),
            "a_ci95": _mean_ci(xa), "b_ci95": _mean_ci(xb),
            "difference": _r(diff), "difference_ci95": [_r(lo), _r(hi)], "p_value": p,
            "b_better_tasks": int(np.sum(xb > xa)), "a_better_tasks": int(np.sum(xa > xb)),
            "ties": int(np.sum(xa == xb)), "bootstrap_seed": BOOTSTRAP_SEED}


def plot_humaneval(path: Path, comp: dict, labels: tuple[str, str]) -> Path:
    plt = _plt()
    groups = ["all"] + list(comp["by_difficulty"])
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.38
    pr = comp["paired"]
    for j, (side, label) in enumerate(zip("ab", labels)):
        xs = [i + (j - 0.5) * width for i in range(len(groups))]
        vals = [pr[f"{side}_pass_at_1"]] + [comp["by_difficulty"][g][side] for g in groups[1:]]
        ci = pr[f"{side}_ci95"] or [vals[0], vals[0]]
        bars = ax.bar(xs, vals, width, label=label)
        ax.errorbar(xs[0], vals[0], yerr=[[max(0.0, vals[0] - ci[0])], [max(0.0, ci[1] - vals[0])]], fmt="none",
                    ecolor="k", capsize=4)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, label_type="center")
    ax.set_xticks(range(len(groups)), [f"all (paired, {pr['n']} tasks)"] + groups[1:])
    ax.set_ylim(0, 110)
    ax.set_ylabel("pass@1 % (bar: 95 % bootstrap)")
    ax.set_title(f"HumanEval pass@1: difference {pr['difference']:+.1f} points, {fmt_p(pr['p_value'])}")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _compare_humaneval(a_dir: Path, b_dir: Path, out_dir: Path, labels: tuple[str, str] | None) -> dict:
    a, b = load_humaneval(a_dir), load_humaneval(b_dir)
    if a.get("variant") != b.get("variant"):
        raise ValueError(f"A is the {a.get('variant')!r} variant and B the {b.get('variant')!r} one: "
                         "compare runs of the same variant")
    ta = per_task_pass_at_1(_read_jsonl(a_dir / "results.jsonl"), a_dir / "results.jsonl")
    tb = per_task_pass_at_1(_read_jsonl(b_dir / "results.jsonl"), b_dir / "results.jsonl")
    la, lb = _labels(a, b, a_dir, b_dir, labels)
    by_diff = {g: _side_by_side(_by_k(v), _by_k((b.get("by_difficulty") or {}).get(g))).get("1")
               for g, v in (a.get("by_difficulty") or {}).items()}
    paired = humaneval_paired(ta, tb)
    warnings = sampling_warning(a, b)
    if paired["n"] < max(len(ta), len(tb)):
        warnings.append(f"A scored {len(ta)} tasks and B {len(tb)}: only the {paired['n']} tasks both scored are "
                        "paired (rerun with the same --num-tasks to compare like with like)")
    comp: dict[str, Any] = {
        "kind": "humaneval", "variant": a.get("variant"),
        "a": {"dir": str(a_dir), "model": a.get("model"), "num_tasks": a.get("num_tasks"),
              "num_samples": a.get("num_samples")},
        "b": {"dir": str(b_dir), "model": b.get("model"), "num_tasks": b.get("num_tasks"),
              "num_samples": b.get("num_samples")},
        "pass_at": _side_by_side(_by_k(a.get("pass_at")), _by_k(b.get("pass_at"))),
        "by_difficulty": {g: v for g, v in by_diff.items() if v is not None},
        "paired": paired, "significant": paired["p_value"] < stats.ALPHA, "b_better": paired["difference"] > 0,
        "warnings": warnings,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_humaneval(out_dir / "comparison.png", comp, (la, lb))
    (out_dir / "comparison.yaml").write_text(yaml.safe_dump(comp, sort_keys=False))
    rows = [["", la, lb, "change (points)"]]
    rows.append([f"pass@1, the {paired['n']} paired tasks (95 % CI)",
                 f"{paired['a_pass_at_1']:.1f} [{_span(paired['a_ci95'])}]",
                 f"{paired['b_pass_at_1']:.1f} [{_span(paired['b_ci95'])}]",
                 f"{paired['difference']:+.1f} [{_span(paired['difference_ci95'])}]"])
    rows += [[f"pass@{k} (each run's log)", f"{v['a']:.1f}", f"{v['b']:.1f}", f"{v['change']:+.1f}"]
             for k, v in comp["pass_at"].items()]
    rows += [[f"pass@1 {g}", f"{v['a']:.1f}", f"{v['b']:.1f}", f"{v['change']:+.1f}"]
             for g, v in comp["by_difficulty"].items()]
    (out_dir / "report.md").write_text(
        f"# HumanEval comparison ({comp['variant']} variant)\n\nA: `{a_dir}`  \nB: `{b_dir}`\n\n"
        f"{_warning_lines(warnings)}{_table(rows)}\n"
        f"![comparison](comparison.png)\n\n## Is the difference real?\n\n{humaneval_sentence(comp)}\n\n"
        "How to read this: per task, pass@1 is the share of its samples that pass; tasks excluded in either run "
        "are left out and the rest are paired by task_id. The interval is a paired bootstrap of the mean "
        f"difference (scipy.stats.bootstrap, BCa, 9,999 resamples, seed {BOOTSTRAP_SEED}); p is a two-sided "
        "sign-flip permutation test of the per-task differences; significant means p < 0.05.\n")
    return comp


def humaneval_sentence(comp: dict) -> str:
    pr = comp["paired"]
    lo, hi = pr["difference_ci95"]
    verdict = ("no difference" if pr["difference"] == 0 else
               "unlikely to be chance" if comp["significant"] else "could be chance")
    return (f"On the {pr['n']} tasks both runs scored, B's pass@1 is {pr['difference']:+.1f} points "
            f"(95 % CI {lo:+.1f} to {hi:+.1f}); B is better on {pr['b_better_tasks']} tasks, A on "
            f"{pr['a_better_tasks']}, tied on {pr['ties']}; {fmt_p(pr['p_value'])}; {verdict}.")


# ----------------------------------------------------------------------------------------------- entry

def write_comparison(a_dir: Path, b_dir: Path, out_dir: Path, labels: tuple[str, str] | None = None) -> dict:
    """Compare two evaluated directories (both circuit runs or both HumanEval runs); returns comparison.yaml's
    content. Raises FileNotFoundError/ValueError on unusable input."""
    a_dir, b_dir = Path(a_dir), Path(b_dir)
    if a_dir.resolve() == b_dir.resolve():
        raise ValueError(f"DIR_A and DIR_B are the same directory ({a_dir.resolve()}): compare two different runs")
    he_a, he_b = is_humaneval_dir(a_dir), is_humaneval_dir(b_dir)
    if he_a != he_b:
        raise ValueError(f"{a_dir if he_a else b_dir} is a humaneval run and {b_dir if he_a else a_dir} is not: "
                         "compare two runs of the same kind")
    if he_a:
        return _compare_humaneval(a_dir, b_dir, out_dir, labels)
    return _compare_circuits(a_dir, b_dir, out_dir, labels)


def b_wins(comp: dict, require_significant: bool = False) -> bool:
    """The exit-status rule: B better on the headline figure (verification / pass@1); if asked, also better on
    the paired prompts and significantly so (a rate can rise while the paired prompts say the opposite, when
    the two runs hold different ids)."""
    if not comp["b_better"]:
        return False
    if not require_significant:
        return True
    if comp["kind"] == "humaneval":
        paired_better = comp["paired"]["difference"] > 0
    else:
        ver = comp["metrics"]["verification_rate"]
        pr, pl = ver["paired"], ver.get("prompt_level") or {}
        paired_better = (pl.get("difference") or 0) > 0 if pl.get("repeated") else pr["b_only"] > pr["a_only"]
    return paired_better and bool(comp["significant"])


def format_comparison(comp: dict) -> str:
    """The comparison as a few terminal lines: rates with 95 % intervals, paired p-value, verdict."""
    if comp["kind"] == "humaneval":
        pr = comp["paired"]
        lines = [f"humaneval ({comp['variant']}) pass@1 on {pr['n']} paired tasks: "
                 f"A {pr['a_pass_at_1']:.1f} [{_span(pr['a_ci95'])}]  B {pr['b_pass_at_1']:.1f} "
                 f"[{_span(pr['b_ci95'])}]"]
        lines += [f"  pass@1 {g:<13} A {v['a']:6.1f}  B {v['b']:6.1f}  ({v['change']:+.1f})"
                  for g, v in comp["by_difficulty"].items()]
        lines.append("  " + humaneval_sentence(comp))
        return "\n".join(lines)
    lines = [f"{'metric':<18} {'A [95% CI]':<21}  {'B [95% CI]':<21} {'change':>7}  paired test (exact McNemar)"]
    for mk, _, _ in METRICS:
        m = comp["metrics"][mk]
        pr = m["paired"]
        ca, cb = f"[{_span(m['a_ci95'])}]", f"[{_span(m['b_ci95'])}]"
        lines.append(f"{mk:<18} {fmt_rate(m['a']):>6} {ca:<14}  {fmt_rate(m['b']):>6} {cb:<14} "
                     f"{_fmt_change(m['change']):>7}  {fmt_p(pr['p_value'])}, n={pr['n']}, "
                     f"B only {pr['b_only']} / A only {pr['a_only']}"
                     f"{' (significant)' if m['significant'] else ''}")
    lines.append("verification: " + metric_sentence("verification_rate", comp["metrics"]["verification_rate"]))
    return "\n".join(lines)
