"""Paired statistics in `python -m evaluation compare` (issue 12): Wilson intervals, exact McNemar, sample size,
HumanEval pairing with a bootstrap interval, --require-significant, and the printed comparison.

Expected values come from hand formulas (binomial sums with math.comb, the Wilson closed form, full
enumeration of sign flips), never from evaluation.stats itself.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from scipy.stats import binom, norm

from evaluation import stats
from evaluation.comparison import b_wins, format_comparison, write_comparison

PY = sys.executable
Z = norm.ppf(0.975)


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    """Wilson (1927) closed form, percent."""
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return 100 * (centre - half), 100 * (centre + half)


def mcnemar_by_hand(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar: twice the smaller binomial tail at 1/2, capped at 1."""
    d, k = a_only + b_only, min(a_only, b_only)
    tail = sum(math.comb(d, i) for i in range(k + 1)) / 2 ** d
    return min(1.0, 2 * tail)


def outcomes(both: int, a_only: int, b_only: int, neither: int) -> tuple[dict, dict]:
    a, b, i = {}, {}, 0
    for n, (va, vb) in ((both, (True, True)), (a_only, (True, False)), (b_only, (False, True)),
                        (neither, (False, False))):
        for _ in range(n):
            a[f"t{i:04d}"], b[f"t{i:04d}"] = va, vb
            i += 1
    return a, b


# ------------------------------------------------------------------------------------------ unit: stats

def test_known_paired_outcomes_give_hand_computed_mcnemar_and_wilson():
    a, b = outcomes(10, 3, 12, 15)  # 40 prompts
    pr = stats.pair_outcomes(a, b)
    assert (pr.n, pr.both, pr.a_only, pr.b_only, pr.neither) == (40, 10, 3, 12, 15)
    assert pr.p_value == pytest.approx(mcnemar_by_hand(3, 12), abs=1e-6)
    # a second route: scipy's binomial cdf, 2 * P(X <= 3), X ~ Binom(15, 1/2)
    assert pr.p_value == pytest.approx(2 * binom.cdf(3, 15, 0.5), abs=1e-6)
    assert pr.significant is True  # 0.0352 < 0.05
    for k in (13, 22):  # A succeeds on 10 + 3, B on 10 + 12
        lo, hi = stats.wilson_interval(k, 40)
        hlo, hhi = wilson_by_hand(k, 40)
        assert lo == pytest.approx(hlo, abs=1e-6) and hi == pytest.approx(hhi, abs=1e-6)


def test_identical_runs_give_p_1_and_not_significant():
    a, _ = outcomes(10, 3, 12, 15)
    pr = stats.pair_outcomes(a, dict(a))
    assert pr.a_only == pr.b_only == 0 and pr.p_value == 1.0 and pr.significant is False
    assert stats.mcnemar_exact(5, 5) == 1.0  # balanced discordance: capped at 1, never above
    assert stats.sample_size_for(pr) is None  # no difference to detect


def test_wilson_edges():
    assert stats.wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-9)
    assert stats.wilson_interval(10, 10)[1] == pytest.approx(100.0, abs=1e-9)
    assert stats.wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        stats.wilson_interval(11, 10)


def exact_mcnemar_power(n: int, p_a_only: float, p_b_only: float) -> float:
    """Power of the exact McNemar test at n pairs, by full enumeration (independent of Connor's formula):
    D ~ Binom(n, psi) discordant pairs; given D = d, B's share ~ Binom(d, p_b_only / psi)."""
    psi = p_a_only + p_b_only
    q = p_b_only / psi
    power = 0.0
    for d in range(1, n + 1):
        reject = [k for k in range(d + 1) if mcnemar_by_hand(d - k, k) < 0.05]
        power += binom.pmf(d, n, psi) * sum(binom.pmf(k, d, q) for k in reject)
    return power


@pytest.mark.parametrize("a_only,b_only", [(3 / 40, 12 / 40), (0.05, 0.20), (0.10, 0.20)])
def test_sample_size_gives_about_80_percent_power(a_only, b_only):
    n = stats.mcnemar_sample_size(a_only, b_only)
    # Connor's normal approximation against the exact test's power at that n: about 80 %
    assert 0.70 <= exact_mcnemar_power(n, a_only, b_only) <= 0.90
    # and clearly short of it at half the prompts
    assert exact_mcnemar_power(n // 2, a_only, b_only) < 0.70


def test_permutation_p_matches_full_enumeration_and_bootstrap_brackets_the_mean():
    a = [0, 50, 100, 0, 50, 0, 100, 50]
    b = [50, 100, 100, 50, 100, 0, 50, 100]
    d = [y - x for x, y in zip(a, b)]
    t = abs(sum(d) / len(d))
    flips = [abs(sum(s * x for s, x in zip(signs, d)) / len(d))
             for signs in itertools.product((1, -1), repeat=len(d))]
    p_hand = sum(f >= t - 1e-12 for f in flips) / len(flips)
    assert stats.paired_permutation_p(a, b) == pytest.approx(p_hand, abs=1e-9)
    diff, lo, hi = stats.paired_bootstrap(a, b, seed=0)
    assert diff == pytest.approx(sum(d) / len(d))
    assert lo < diff < hi and lo >= min(d) and hi <= max(d)
    assert stats.paired_bootstrap(a, b, seed=0) == (diff, lo, hi)  # seeded: reproducible
    assert stats.paired_bootstrap(a, a) == (0.0, 0.0, 0.0) and stats.paired_permutation_p(a, a) == 1.0


# -------------------------------------------------------------------------------- hand-made result dirs

def circuit_run(path: Path, model: str, verified: dict[str, bool], syntax: dict[str, bool] | None = None,
                prompt_of=None) -> Path:
    """A scored directory by hand: results.jsonl rows and the validation_log.yaml rates they imply. Each id
    is its own prompt unless `prompt_of(id)` says which prompt (constraint) it answers (repeated prompts)."""
    path.mkdir(parents=True)
    syntax = syntax or {i: True for i in verified}
    prompt_of = prompt_of or (lambda i: f"prompt {i}")
    rows = [{"id": i, "hamiltonian": "heisenberg", "num_qubits": 4, "constraint": prompt_of(i),
             "syntax_valid": syntax[i], "verification_pass": v, "bp_free": True if v else None,
             "constraint_satisfied": None}
            for i, v in verified.items()]
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    n = len(rows)
    pct = lambda k: round(100 * k / n, 2)  # noqa: E731
    log = {"syntax_rate": pct(sum(syntax.values())), "verification_rate": pct(sum(verified.values())),
           "bp_free_rate": pct(sum(verified.values())), "num_tests": n, "passed": False, "model": model,
           "thresholds": {"syntax": 95.0, "verification": 80.0, "bp_free": 60.0}, "constraint_rate": 0.0}
    (path / "validation_log.yaml").write_text(yaml.safe_dump(log))
    return path


def _compare(a: Path, b: Path, out: Path, *flags) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "evaluation", "compare", str(a), str(b), "--out", str(out), *flags],
                          capture_output=True, text=True, timeout=120)


def test_compare_end_to_end_exit_codes_and_fields(tmp_path):
    a, b = outcomes(10, 3, 12, 15)
    da, db = circuit_run(tmp_path / "A", "base", a), circuit_run(tmp_path / "B", "tuned", b)
    p = _compare(da, db, tmp_path / "c1", "--require-significant")
    assert p.returncode == 0, p.stdout + p.stderr  # better and p = 0.035
    comp = yaml.safe_load((tmp_path / "c1" / "comparison.yaml").read_text())
    ver = comp["metrics"]["verification_rate"]
    assert ver["a"] == 32.5 and ver["b"] == 55.0 and ver["change"] == 22.5
    assert ver["paired"] == {"n": 40, "both": 10, "a_only": 3, "b_only": 12, "neither": 15,
                             "p_value": pytest.approx(mcnemar_by_hand(3, 12), abs=1e-9)}
    assert ver["significant"] is True
    for key, k in (("a_ci95", 13), ("b_ci95", 22)):
        assert ver[key] == pytest.approx(list(wilson_by_hand(k, 40)), abs=0.006)
    syn = comp["metrics"]["syntax_rate"]  # every reply compiles in both: no difference at all
    assert syn["paired"]["p_value"] == 1.0 and syn["significant"] is False and syn["prompts_needed"] is None
    assert ver["prompts_needed"] > 0
    report = (tmp_path / "c1" / "report.md").read_text()
    assert "B verifies 9 more of 40 prompts" in report and "p = 0.035" in report and "unlikely to be chance" in report
    assert f"about {ver['prompts_needed']} paired prompts" in report
    assert (tmp_path / "c1" / "comparison.png").stat().st_size > 0
    assert "p = 0.035" in p.stdout and "[" in p.stdout  # the printed comparison has intervals and the p-value

    # B better by one prompt of 20: exit 0 without the flag, 1 with it
    a, b = outcomes(8, 1, 2, 9)
    da, db = circuit_run(tmp_path / "A2", "base", a), circuit_run(tmp_path / "B2", "tuned", b)
    assert _compare(da, db, tmp_path / "c2").returncode == 0
    p = _compare(da, db, tmp_path / "c2", "--require-significant")
    assert p.returncode == 1 and "could be chance" in (tmp_path / "c2" / "report.md").read_text()

    # B worse (significantly): 1 either way
    a, b = outcomes(10, 12, 3, 15)
    da, db = circuit_run(tmp_path / "A3", "base", a), circuit_run(tmp_path / "B3", "tuned", b)
    assert _compare(da, db, tmp_path / "c4").returncode == 1
    assert _compare(da, db, tmp_path / "c4", "--require-significant").returncode == 1

    # identical runs (a copy: the same directory twice is refused): p = 1, not significant, exit 1
    import shutil

    p = _compare(da, shutil.copytree(da, tmp_path / "A3-copy"), tmp_path / "c5", "--require-significant")
    assert p.returncode == 1
    comp = yaml.safe_load((tmp_path / "c5" / "comparison.yaml").read_text())
    assert all(comp["metrics"][m]["paired"]["p_value"] == 1.0 and comp["metrics"][m]["significant"] is False
               for m in ("syntax_rate", "verification_rate", "bp_free_rate"))


def test_pairing_uses_only_ids_in_both_and_refuses_bad_input(tmp_path):
    a, b = outcomes(10, 3, 12, 15)
    b = {k: v for k, v in b.items() if k not in ("t0000", "t0039")}  # B lost two replies
    da, db = circuit_run(tmp_path / "A", "base", a), circuit_run(tmp_path / "B", "tuned", b)
    comp = write_comparison(da, db, tmp_path / "c")
    ver = comp["metrics"]["verification_rate"]
    assert ver["paired"]["n"] == 38 and ver["paired"]["both"] == 9 and ver["paired"]["neither"] == 14
    assert ver["a_ci95"] == pytest.approx(list(wilson_by_hand(13, 40)), abs=0.006)  # A's interval: all 40
    (db / "results.jsonl").unlink()
    assert _compare(da, db, tmp_path / "c2").returncode == 2
    he = humaneval_run(tmp_path / "H", "m", "normal", {"t/0": [True]})
    p = _compare(da, he, tmp_path / "c3")
    assert p.returncode == 2 and "same kind" in p.stderr


def test_require_significant_needs_b_better_on_the_paired_prompts_too(tmp_path):
    # 20 shared prompts where A wins 12 to 0 (p < 0.001), but B's own 20 extra prompts all pass: B's rate is higher
    a = {f"p{i}": i < 15 for i in range(20)} | {f"x{i}": False for i in range(20)}
    b = {f"p{i}": i < 3 for i in range(20)} | {f"y{i}": True for i in range(20)}
    da, db = circuit_run(tmp_path / "A", "base", a), circuit_run(tmp_path / "B", "tuned", b)
    assert _compare(da, db, tmp_path / "c").returncode == 0  # the seed's rule: B's rate is higher (57.5 > 37.5)
    comp = yaml.safe_load((tmp_path / "c" / "comparison.yaml").read_text())
    pr = comp["metrics"]["verification_rate"]["paired"]
    assert (pr["n"], pr["a_only"], pr["b_only"]) == (20, 12, 0) and comp["significant"] is True
    assert _compare(da, db, tmp_path / "c", "--require-significant").returncode == 1


def humaneval_run(path: Path, model: str, variant: str, samples: dict[str, list[bool]],
                  excluded: tuple[str, ...] = ()) -> Path:
    """A HumanEval output dir by hand, from issue 11's field contract."""
    path.mkdir(parents=True)
    rows = []
    for tid, passed in samples.items():
        for s, ok in enumerate(passed):
            failure = "excluded" if tid in excluded else (None if ok else "assertion")
            rows.append({"task_id": tid, "sample": s, "passed": ok and tid not in excluded, "failure": failure,
                         "error": None, "exec_seconds": 0.1})
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept = {t: v for t, v in samples.items() if t not in excluded}
    p1 = round(100 * sum(sum(v) / len(v) for v in kept.values()) / len(kept), 2)
    log = {"variant": variant, "model": model, "num_tasks": len(kept), "num_samples": 2, "pass_at": {1: p1},
           "by_difficulty": {"basic": {1: p1}, "intermediate": {1: 0.0}},
           "excluded": [{"task_id": t, "reason": "needs an IBM Quantum account"} for t in excluded],
           "pass_at_all_tasks": {1: p1}, "failures": {}}
    (path / "humaneval_log.yaml").write_text(yaml.safe_dump(log, sort_keys=False))
    return path


def test_humaneval_dirs_are_paired_per_task(tmp_path):
    a = {f"qiskitHumanEval/{i}": s for i, s in enumerate(
        [[False, False], [True, False], [True, True], [False, False], [True, False], [False, False],
         [True, True], [False, True], [True, True]])}
    b = {f"qiskitHumanEval/{i}": s for i, s in enumerate(
        [[True, False], [True, True], [True, True], [True, False], [True, True], [False, False],
         [True, False], [True, True], [False, False]])}
    da = humaneval_run(tmp_path / "A", "base", "normal", a, excluded=("qiskitHumanEval/8",))
    db = humaneval_run(tmp_path / "B", "tuned", "normal", b)
    p = _compare(da, db, tmp_path / "c")
    assert p.returncode == 0, p.stdout + p.stderr  # B has the higher pass@1
    comp = yaml.safe_load((tmp_path / "c" / "comparison.yaml").read_text())
    pr = comp["paired"]
    keep = [f"qiskitHumanEval/{i}" for i in range(8)]  # task 8 is excluded in A, so it is not paired
    d = [100 * (sum(b[t]) - sum(a[t])) / 2 for t in keep]
    assert pr["n"] == 8 and pr["difference"] == pytest.approx(sum(d) / 8, abs=0.005)
    t = abs(sum(d) / 8)
    flips = [abs(sum(s * x for s, x in zip(signs, d)) / 8) for signs in itertools.product((1, -1), repeat=8)]
    assert pr["p_value"] == pytest.approx(sum(f >= t - 1e-9 for f in flips) / 256, abs=1e-9)
    assert (pr["b_better_tasks"], pr["a_better_tasks"], pr["ties"]) == (5, 1, 2)
    lo, hi = pr["difference_ci95"]
    assert lo <= pr["difference"] <= hi
    assert comp["significant"] is (pr["p_value"] < 0.05)
    assert set(comp["pass_at"]) == {"1"} and set(comp["by_difficulty"]) == {"basic", "intermediate"}
    assert _compare(da, db, tmp_path / "c", "--require-significant").returncode == (0 if comp["significant"] else 1)
    assert "pass@1" in p.stdout and "basic" in p.stdout
    assert "B's pass@1 is" in (tmp_path / "c" / "report.md").read_text()
    dh = humaneval_run(tmp_path / "Hard", "tuned", "hard", b)
    q = _compare(da, dh, tmp_path / "c2")
    assert q.returncode == 2 and "same variant" in q.stderr


def test_format_comparison_and_demo_summary_print_intervals_and_p(tmp_path, capsys):
    from quantummind.demo import DemoResult, print_summary

    a, b = outcomes(10, 3, 12, 15)
    comp = write_comparison(circuit_run(tmp_path / "A", "base", a), circuit_run(tmp_path / "B", "tuned", b),
                            tmp_path / "c")
    lo, hi = wilson_by_hand(22, 40)
    text = format_comparison(comp)
    assert f"[{lo:.1f}, {hi:.1f}]" in text and "p = 0.035" in text and "B verifies 9 more of 40" in text
    rates = {"base": {k: comp["metrics"][k]["a"] for k in ("syntax_rate", "verification_rate", "bp_free_rate")},
             "fine-tuned": {k: comp["metrics"][k]["b"] for k in ("syntax_rate", "verification_rate", "bp_free_rate")}}
    print_summary(DemoResult(rates, [], 60.0, {}, comp), tmp_path)
    out = capsys.readouterr().out
    assert f"[{lo:.1f}, {hi:.1f}]" in out and "p = 0.035" in out and "McNemar" in out


def test_repeated_prompts_are_compared_per_prompt_not_as_independent_pairs(tmp_path):
    """10 prompts, 3 replies each (--num-tests 30 cycling 10 combinations): B succeeds on all 3 replies of 3
    prompts where A fails, identical elsewhere. Reply level, McNemar: 9 discordant pairs all for B,
    p = 2 * 0.5**9 = 0.0039. Prompt level: 3 prompts differ by +1, 7 by 0; the exact sign-flip p is
    P(|sum of 3 random signs| >= 3) = 2/8 = 0.25: not significant, and it decides."""
    ids = [f"t{i:04d}" for i in range(30)]
    prompt_of = lambda i: f"combination {int(i[1:]) % 10}"  # noqa: E731
    a = {i: False for i in ids}
    b = {i: int(i[1:]) % 10 < 3 for i in ids}
    comp = write_comparison(circuit_run(tmp_path / "a", "base", a, prompt_of=prompt_of),
                            circuit_run(tmp_path / "b", "tuned", b, prompt_of=prompt_of), tmp_path / "cmp")
    ver = comp["metrics"]["verification_rate"]
    assert ver["paired"]["b_only"] == 9 and ver["paired"]["p_value"] == pytest.approx(2 * 0.5 ** 9)
    pl = ver["prompt_level"]
    assert pl["repeated"] and pl["n_prompts"] == 10 and pl["p_value"] == pytest.approx(0.25)
    assert pl["a_mean"] == 0.0 and pl["b_mean"] == 30.0 and pl["difference"] == 30.0
    assert ver["significant"] is False and not b_wins(comp, require_significant=True) and b_wins(comp)
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "Reply level:" in report and "Prompt level (prompts repeat" in report and "p = 0.25" in report
    # each prompt once: the prompt-level figures agree with the pairs and McNemar still decides
    once = write_comparison(circuit_run(tmp_path / "a1", "base", {i: False for i in ids[:10]}),
                            circuit_run(tmp_path / "b1", "tuned", {i: True for i in ids[:10]}), tmp_path / "cmp1")
    v1 = once["metrics"]["verification_rate"]
    assert not v1["prompt_level"]["repeated"] and v1["significant"] == (v1["paired"]["p_value"] < 0.05)


def _drawn_texts(monkeypatch) -> list[str]:
    """Every text matplotlib draws into a figure saved from now on (the bar labels included)."""
    from matplotlib.figure import Figure

    seen: list[str] = []
    real = Figure.savefig

    def savefig(fig, *args, **kwargs):
        seen.extend(t.get_text() for ax in fig.axes for t in ax.texts)
        return real(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return seen


def test_plots_draw_na_as_na_not_as_zero(tmp_path, monkeypatch):
    """A rate that is n/a (no scored reply) is labelled "n/a" in comparison.png and breakdown.png, never "0.0"."""
    from evaluation.comparison import plot_comparison
    from evaluation.report import Thresholds, plot_breakdown

    ids = [f"t{i:04d}" for i in range(6)]
    comp = write_comparison(circuit_run(tmp_path / "a", "base", {i: True for i in ids}),
                            circuit_run(tmp_path / "b", "tuned", {i: False for i in ids}), tmp_path / "cmp")
    comp["metrics"]["bp_free_rate"].update(b=None, b_ci95=None)
    texts = _drawn_texts(monkeypatch)
    plot_comparison(tmp_path / "c.png", comp, ("A", "B"), Thresholds())
    # A: 100.0 x 3; B: syntax 100.0, verification 0.0, BP-free n/a
    assert texts.count("100.0") == 4 and texts.count("0.0") == 1 and texts.count("n/a") == 1
    texts.clear()
    rates = {"syntax_rate": 50.0, "verification_rate": None, "bp_free_rate": None}
    plot_breakdown(tmp_path / "b.png", {"by_hamiltonian": {"tfim": rates}, "by_num_qubits": {4: rates}})
    assert texts.count("n/a") == 4 and "0.0" not in texts
