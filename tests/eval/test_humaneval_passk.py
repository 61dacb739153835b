"""pass@k (Chen et al. 2021) against hand-computed values and math.comb, and the log's figures."""

from math import comb

import pytest

from evaluation.humaneval.passk import mean_pass_at_k, pass_at_k, pass_at_table
from evaluation.humaneval.report import summarize


@pytest.mark.parametrize("n,c,k,expected", [
    (5, 2, 1, 2 / 5),                 # pass@1 = c / n
    (5, 2, 2, 1 - 3 / 10),            # 1 - C(3,2)/C(5,2)
    (10, 3, 5, 1 - 21 / 252),         # 1 - C(7,5)/C(10,5)
    (5, 4, 2, 1.0),                   # n - c < k: every draw of 2 holds a pass
    (200, 1, 100, 0.5),               # 1 - C(199,100)/C(200,100) = 1 - 100/200
    (10, 0, 10, 0.0),                 # c = 0
    (10, 10, 1, 1.0),                 # c = n
    (1, 1, 1, 1.0),
])
def test_hand_computed_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_agrees_with_exact_binomials_on_a_grid():
    for n in (1, 2, 7, 20):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - comb(n - c, k) / comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12), (n, c, k)


def test_stable_where_binomials_overflow_a_float():
    # C(2000, 1000) is ~1e600: the ratio form would overflow; the product form gives 1 - C(1990,1000)/C(2000,1000)
    exact = 1 - comb(1990, 1000) / comb(2000, 1000)  # Python ints, exact division to float
    assert pass_at_k(2000, 10, 1000) == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("n,c,k", [(3, 1, 5), (1, 0, 2)])
def test_k_larger_than_n_is_refused(n, c, k):
    with pytest.raises(ValueError, match="needs at least"):
        pass_at_k(n, c, k)


@pytest.mark.parametrize("n,c,k", [(5, 6, 1), (5, -1, 1), (0, 0, 1), (5, 1, 0)])
def test_bad_counts_are_refused(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_over_tasks_and_table_keys():
    counts = [(10, 0), (10, 5), (10, 10)]
    # pass@1: (0 + 0.5 + 1) / 3; pass@5: (0 + (1 - C(5,5)/C(10,5)) + 1) / 3
    assert mean_pass_at_k(counts, 1) == pytest.approx(0.5)
    assert mean_pass_at_k(counts, 5) == pytest.approx((1 - 1 / 252 + 1) / 3)
    table = pass_at_table(counts)
    assert set(table) == {1, 5, 10} and table[1] == 50.0
    assert set(pass_at_table([(3, 1), (10, 2)])) == {1}  # k <= the smallest n only
    assert pass_at_table([]) == {}
    with pytest.raises(ValueError):
        mean_pass_at_k([], 1)


def _r(task: int, sample: int, passed: bool, failure=None) -> dict:
    return {"task_id": f"qiskitHumanEval/{task}", "sample": sample, "passed": passed,
            "failure": None if passed else (failure or "assertion"), "error": None, "exec_seconds": 0.1}


def test_summary_excludes_tasks_and_counts_them_failed_in_all_tasks():
    # task 0 (basic): 1 of 2 pass; task 1 (basic): 2 of 2; task 43: excluded; one judge error on task 1 is
    # no verdict (left out of n); difficulties from the data: 0, 1 basic; 43 in the data as well.
    results = [_r(0, 0, True), _r(0, 1, False), _r(1, 0, True), _r(1, 1, True), _r(1, 2, False, "judge_error"),
               _r(43, 0, False, "excluded"), _r(43, 1, False, "excluded")]
    s = summarize(results, "normal", model="m")
    assert s["num_tasks"] == 3 and s["num_tasks_scored"] == 2 and s["num_samples"] == 2
    assert s["pass_at"] == {1: 75.0}                  # (0.5 + 1) / 2
    assert s["pass_at_all_tasks"] == {1: 50.0}        # (0.5 + 1 + 0) / 3
    assert s["by_difficulty"] == {"basic": {1: 75.0}}
    assert [e["task_id"] for e in s["excluded"]] == ["qiskitHumanEval/43"]
    assert s["failures"] == {"excluded": 2, "assertion": 1, "judge_error": 1}


def test_pass_at_10_lost_to_a_judge_error_is_said_not_dropped():
    """10 samples per task, one of them a judge error: pass@10 cannot be estimated from 9 verdicts; the
    summary says why it is missing (pass_at_omitted) instead of dropping it silently."""
    results = [_r(0, i, i == 0) for i in range(10)] + [_r(1, i, True) for i in range(9)] + \
        [_r(1, 9, False, "judge_error")]
    s = summarize(results, "normal", model="m")
    assert set(s["pass_at"]) == {1, 5}
    assert list(s["pass_at_omitted"]) == [10] and "qiskitHumanEval/1" in s["pass_at_omitted"][10]
    full = summarize([r for r in results if r["task_id"].endswith("/0")], "normal", model="m")
    assert set(full["pass_at"]) == {1, 5, 10} and full["pass_at_omitted"] == {}
