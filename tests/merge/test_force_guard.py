"""`merge_adapter.py --force` is no rm -rf (issue 23): the output may never be, hold or lie inside an
input, the working directory, a home or a root; only an earlier merge's output is replaced, and only
after the new merge succeeded. Every refusal leaves the inputs byte-identical."""

from __future__ import annotations

import hashlib
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from merge_helpers import peft_run
from quantummind.merge import MergeError, merge
from quantummind.merge.target import check_output_target
from quantummind.paths import REPO_ROOT, offline_env

CLI = REPO_ROOT / "fine-tuning" / "merge_adapter.py"


@pytest.fixture(scope="module")
def run_files(tiny_model_dir, tmp_path_factory):
    """One PEFT-built run (best checkpoint-2, last checkpoint-4), copied into each test's project folder."""
    return peft_run(tiny_model_dir, tmp_path_factory.mktemp("guard"), {2: 0.9, 4: 1.5})


@pytest.fixture
def project(run_files, tmp_path, monkeypatch) -> Path:
    """A newcomer's layout, paths relative to the project folder (the working directory)."""
    proj = tmp_path / "proj"
    shutil.copytree(run_files.base_model, proj / "models" / "base")
    shutil.copytree(run_files.output_dir, proj / "runs" / "my-run")
    (proj / "data").mkdir()
    (proj / "data" / "train.jsonl").write_text('{"messages": []}\n')
    (proj / "configs").mkdir()
    (proj / "configs" / "run.yaml").write_text(
        "base_model: ./models/base\noutput_dir: runs/my-run\nadapter: lora\n"
        "datasets:\n  - path: data/train.jsonl\n    type: chat_template\n"
        "dataset_prepared_path: prepared\n")
    (proj / "notes.txt").write_text("mine\n")
    monkeypatch.chdir(proj)
    return proj


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("output, says", [
    ("models/base", "is the base model"),
    ("models", "contains the base model"),
    ("models/base/merged", "lies inside the base model"),
    ("runs/my-run", "is the run's output_dir"),
    ("runs/my-run/..", "contains the run's output_dir"),  # the parent of the checkpoints, via ..
    ("runs/my-run/checkpoint-2", "lies inside the run's output_dir"),
    ("runs/my-run/merged", "lies inside the run's output_dir"),
    ("configs", "contains the config"),
    ("data", "contains the dataset"),
    ("data/train.jsonl", "is the dataset"),
    ("prepared", "is the dataset"),  # dataset_prepared_path, not yet created
    (".", "is the working directory"),
    ("..", "contains the working directory"),
    ("~", "is a home directory"),  # HOME is a fake one (below): unguarded code would replace it
    ("~/..", "contains a home directory"),
])
def test_force_refuses_every_input_and_touches_nothing(project, output, says, monkeypatch):
    # Never the real home: a run of this test on unguarded code (to see it fail) must not cost one.
    monkeypatch.setenv("HOME", str(project / "home" / "me"))
    (project / "home" / "me").mkdir(parents=True)
    before = tree_digest(project)
    with pytest.raises(MergeError, match=f"{says}.*refusing") as err:
        merge("configs/run.yaml", output=output, force=True)
    assert "\n" not in str(err.value)
    assert tree_digest(project) == before
    assert not list(project.parent.glob(".*merging*")) and not list(project.glob("**/.*merging*"))


def test_a_filesystem_root_is_refused():
    """Checked directly: the whole merge aimed at / is not something to run, even to see it fail."""
    with pytest.raises(MergeError, match="is a filesystem root"):
        check_output_target(Path("/"), [], force=True)


def test_force_over_output_dir_via_cli_exits_2_one_line(project):
    before = tree_digest(project)
    proc = subprocess.run([sys.executable, str(CLI), "configs/run.yaml", "--output", "runs/my-run", "--force"],
                          cwd=project, env=offline_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: --output") and "is the run's output_dir" in lines[-1], proc.stderr
    assert "Traceback" not in proc.stderr
    assert tree_digest(project) == before


def test_force_replaces_only_an_earlier_merge(project):
    mine = project / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(MergeError, match="no merge wrote it"):
        merge("configs/run.yaml", output="mine", force=True)
    assert (mine / "thesis.tex").read_text() == "years of work"
    first = merge("configs/run.yaml", output="merged", checkpoint="last")
    assert first.report["step"] == 4
    second = merge("configs/run.yaml", output="merged", force=True)
    assert second.report["step"] == 2 and (project / "merged" / "merge_report.json").is_file()
    assert not list(project.glob(".merged.*"))  # no temporary or old folder left


def test_force_keeps_the_old_merge_when_the_new_one_fails(project, monkeypatch):
    merge("configs/run.yaml", output="merged")
    before = tree_digest(project / "merged")
    merge_mod = importlib.import_module("quantummind.merge.merge")
    real, calls = merge_mod._produce, {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(merge_mod, "_produce", flaky)
    with pytest.raises(OSError):
        merge("configs/run.yaml", output="merged", force=True)
    assert tree_digest(project / "merged") == before
    assert sorted(p.name for p in project.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("output", ["notes.txt/merged", "/proc/qm-merged"])
def test_unwritable_output_is_one_line_exit_2_before_work(project, output):
    """A folder that cannot take the output (under a file; /proc refuses even root) fails before
    the merge starts, not at the final rename."""
    before = tree_digest(project)
    proc = subprocess.run([sys.executable, str(CLI), "configs/run.yaml", "--output", output, "-q"],
                          cwd=project, env=offline_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --output"), proc.stderr
    assert tree_digest(project) == before
