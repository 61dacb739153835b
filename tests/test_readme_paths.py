"""README's journeys, followed verbatim, chain (issue 23 item 3): the dataset folder journey 1 writes is
the one the configs read, the merged folder journey 2 writes is the one journey 3 serves, and the
names journey 4 evaluates and compares are the ones served and written."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from quantummind.paths import REPO_ROOT

README = REPO_ROOT / "README.md"


def journey_commands() -> list[list[str]]:
    """Every command line of the bash blocks in README's journeys section, split as the shell would
    (comments dropped)."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## The four journeys"):]
    section = section[:section.index("\n## ", 1)]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def _value(words: list[str], flag: str) -> str | None:
    return words[words.index(flag) + 1] if flag in words else None


def _uses(commands: list[list[str]], script: str) -> list[list[str]]:
    return [w for w in commands if any(x.endswith(script) for x in w)]


def test_journey_1_writes_the_dataset_where_the_configs_read_it():
    commands = journey_commands()
    prepared = [Path(_value(w, "--out")) for w in _uses(commands, "prepare_dataset.py")]
    assert prepared, "journey 1 prepares a dataset"
    configs = sorted({Path(x) for w in commands for x in w if x.startswith("configs/") and x.endswith(".yaml")})
    assert configs, "the journeys name a config"
    for rel in configs:
        cfg = yaml.safe_load((REPO_ROOT / rel).read_text())
        for key in ("datasets", "test_datasets"):
            for entry in cfg.get(key) or []:
                path = Path(entry["path"])
                assert any(path.parent == out for out in prepared), \
                    f"{rel}: {key} path {path} is not in the folder README's journey 1 writes ({prepared})"


def test_every_gpu_config_reads_the_readme_dataset_folder_and_says_so():
    prepared = {_value(w, "--out") for w in _uses(journey_commands(), "prepare_dataset.py")}
    for config in sorted((REPO_ROOT / "configs").glob("*.yaml")):
        text = config.read_text()
        header = re.findall(r"prepare_dataset\.py --out (\S+)", text)
        for out in header:  # a config's own instructions agree with README's
            if not out.startswith("build/"):
                assert out in prepared, f"{config.name} tells to write the dataset to {out}, README to {prepared}"


def test_journeys_2_to_4_chain_merge_serve_evaluate_compare():
    commands = journey_commands()
    merge = _uses(commands, "merge_adapter.py")
    assert merge
    cfg = yaml.safe_load((REPO_ROOT / merge[0][2]).read_text())
    merged = f"fine-tuning/merged_models/{Path(cfg['output_dir']).name}"  # merge's default --output
    served = [w for w in _uses(commands, "serve_vllm.sh") if "stop" not in w]
    models = [next(x for x in w[1:] if not x.startswith("-")) for w in served]
    assert merged in models, f"journey 3 serves {models}, journey 2 writes {merged}"
    hub = [m for m in models if not m.startswith("fine-tuning/")]
    assert hub, "journey 3 shows how to serve the base model (a hub id) for the comparison"
    runs = [w for w in commands if w[:3] == ["python", "-m", "evaluation"] and w[3] == "run"]
    names = {_value(w, "--model") for w in runs}
    assert Path(merged).name in names and set(hub) <= names, (names, models)
    outs = {_value(w, "--out") for w in runs}
    compare = [w for w in commands if w[:4] == ["python", "-m", "evaluation", "compare"]]
    assert compare and set(compare[0][4:6]) <= outs, f"compare reads {compare[0][4:6]}, run writes {outs}"
