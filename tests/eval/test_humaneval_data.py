"""The vendored Qiskit HumanEval data: unchanged upstream files (hashes in SOURCE.md), both variants."""

import hashlib
import re
from collections import Counter

from evaluation.humaneval.tasks import DATA_DIR, EXCLUDED, NEEDS_GRAPHVIZ, exclusions, load_tasks


def test_files_match_the_hashes_recorded_in_source_md():
    source = (DATA_DIR / "SOURCE.md").read_text()
    assert "5327d8e" in source and "Apache-2.0" in source
    assert "Apache License" in (DATA_DIR / "LICENSE").read_text()
    recorded = dict(re.findall(r"(normal|hard) `([0-9a-f]{64})`", source))
    for variant, name in (("normal", "dataset_qiskit_test_human_eval.json"),
                          ("hard", "dataset_qiskit_test_human_eval_hard.json")):
        assert hashlib.sha256((DATA_DIR / name).read_bytes()).hexdigest() == recorded[variant]


def test_both_variants_hold_the_same_151_tasks():
    normal, hard = load_tasks("normal"), load_tasks("hard")
    assert len(normal) == len(hard) == 151
    assert [t.task_id for t in normal] == [f"qiskitHumanEval/{i}" for i in range(151)] == [t.task_id for t in hard]
    assert [t.entry_point for t in normal] == [t.entry_point for t in hard]
    assert Counter(t.difficulty for t in normal) == {"basic": 79, "intermediate": 67, "difficult": 5}
    # the shapes the program assembly relies on (docs/humaneval.md)
    assert all(f"def {t.entry_point}(" in t.prompt and not t.prompt.endswith("\n") for t in normal)
    assert all(f"def {t.entry_point}(" in t.canonical_solution for t in hard)
    assert all(f"\ncheck({t.entry_point})" in t.test for t in hard)


def test_exclusions_have_reasons_and_graphviz_tasks_depend_on_dot():
    assert all(tid in {t.task_id for t in load_tasks()} and len(why) > 20 for tid, why in EXCLUDED.items())
    with_dot, without_dot = exclusions(graphviz=True), exclusions(graphviz=False)
    assert set(with_dot) == set(EXCLUDED)
    assert set(without_dot) == set(EXCLUDED) | set(NEEDS_GRAPHVIZ)
    assert all("Graphviz" in without_dot[t] for t in NEEDS_GRAPHVIZ)
