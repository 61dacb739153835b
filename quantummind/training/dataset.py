"""Generate a chat-format Qiskit dataset whose every answer passed the evaluation verifier.

The seed's steps 3.1-3.3 ("dataset prepared") happened elsewhere; users of this tool start with
nothing. Each example is a request for a variational circuit (Hamiltonian family x 2-10 qubits x
constraint x phrasing) answered by a short explanation and one python block, drawn from several
ansatz families (hardware-efficient RY/CX, RY-RZ with CZ ladders, Hamiltonian-variational layers
matched to the model, qiskit.circuit.library blocks) and code styles (ParameterVector, named
Parameters, helper functions, library calls). Every answer is run through
`evaluation.scoring.score_replies` (sandboxed execution, circuit verifier, barren-plateau check under
the judge's default rule `scaling`, so deep 2-design-like answers are rejected) and kept only if it
passes. Prompts equal (after normalisation) to any evaluation prompt are
removed, so the benchmark never sees its own questions.

`style="simple"` keeps one ansatz, one code layout and one explanation template: the consistent,
short answers a tiny random-init model can learn from a few hundred examples.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

from evaluation.prompts import HAMILTONIANS, chat_messages  # the seed's wording, defined once

logger = logging.getLogger(__name__)

QUBIT_RANGE = range(2, 11)
DEFAULT_NUM_EXAMPLES = 6000


@dataclass(frozen=True)
class Family:
    key: str
    name: str          # as it appears in prompts
    verify_as: str     # evaluation.hamiltonians key used for the barren-plateau check
    hva: str           # which Hamiltonian-variational layer matches the model


FAMILIES: dict[str, Family] = {
    "xy_chain": Family("xy_chain", HAMILTONIANS["xy_chain"], "xy_chain", "xy"),
    "heisenberg": Family("heisenberg", HAMILTONIANS["heisenberg"], "heisenberg", "heisenberg"),
    "tfim": Family("tfim", HAMILTONIANS["tfim"], "tfim", "tfim"),
    # Beyond the evaluation set: their BP check runs against the nearest evaluated model.
    "xxz": Family("xxz", "XXZ chain", "heisenberg", "xxz"),
    "mixed_ising": Family("mixed_ising", "Ising chain in transverse and longitudinal fields", "tfim", "mixed_ising"),
}

ANSATZE = ("hea", "ryrz_cz", "hva", "library")

# Constraint text -> ansatz families that honour it ("" = no constraint). The first five are the
# seed's; the rest widen the request space.
CONSTRAINTS: dict[str, tuple[str, ...]] = {
    "Use only RY and CX gates": ("hea",),
    "Minimize circuit depth": ("hea", "ryrz_cz", "hva", "library"),
    "Use a hardware-efficient structure": ("hea", "ryrz_cz", "library"),
    "Include entangling layers": ANSATZE,
    "": ANSATZE,
    "Use CZ entanglers": ("ryrz_cz",),
    "Use a Hamiltonian-variational ansatz": ("hva",),
    "Use the Qiskit circuit library": ("library",),
    "Use nearest-neighbour entanglement only": ANSATZE,
    "Keep the number of parameters small": ("hva",),
    "Use at most two layers": ANSATZE,
}

PHRASINGS = (
    "Create a {n}-qubit variational circuit for the {name} Hamiltonian ground state. {c}",
    "Write a Qiskit ansatz on {n} qubits for finding the ground state of the {name}. {c}",
    "I need a parameterized {n}-qubit circuit to prepare the {name} ground state with VQE. {c}",
    "Build a variational ansatz with {n} qubits for the {name} Hamiltonian. {c}",
    "Give me Qiskit code for a {n}-qubit VQE ansatz targeting the {name} ground state. {c}",
)


def normalise(text: str) -> str:
    """Lower-case, single spaces, no trailing punctuation: the decontamination key."""
    return re.sub(r"\s+", " ", text).strip().strip(".!?").strip().lower()


# ---------------------------------------------------------------- code templates


def _indent(lines: list[str], n: int = 4) -> list[str]:
    return [" " * n + line if line else line for line in lines]


def _hea_body(ent: str, var: str = "qc", nq: str = "num_qubits") -> list[str]:
    if ent == "cz":
        return [f"for q in range({nq} - 1):", f"    {var}.cz(q, q + 1)"]
    if ent == "brick":
        return ["for start in (0, 1):", f"    for q in range(start, {nq} - 1, 2):", f"        {var}.cx(q, q + 1)"]
    return [f"for q in range({nq} - 1):", f"    {var}.cx(q, q + 1)"]


def code_hea(n: int, reps: int, style: str, gates: tuple[str, ...], ent: str) -> str:
    """Rotation layers (`gates` on every qubit) between entangling ladders, ending on rotations."""
    k = len(gates)
    idx = (lambda j: "layer * num_qubits + q") if k == 1 else (lambda j: f"{k} * (layer * num_qubits + q) + {j}")
    size = "num_qubits * (reps + 1)" if k == 1 else f"{k} * num_qubits * (reps + 1)"
    if style == "vector":
        lines = ["from qiskit import QuantumCircuit", "from qiskit.circuit import ParameterVector", "",
                 f"num_qubits = {n}", f"reps = {reps}",
                 f"theta = ParameterVector(\"theta\", {size})",
                 "qc = QuantumCircuit(num_qubits)", "", "for layer in range(reps + 1):",
                 "    for q in range(num_qubits):"]
        for j, g in enumerate(gates):
            lines.append(f"        qc.{g}(theta[{idx(j)}], q)")
        lines += ["    if layer < reps:"] + _indent(_hea_body(ent), 8)
        return "\n".join(lines) + "\n"
    if style == "named":
        lines = ["from qiskit import QuantumCircuit", "from qiskit.circuit import Parameter", "",
                 f"num_qubits = {n}", "qc = QuantumCircuit(num_qubits)", "",
                 f"for layer in range({reps + 1}):", "    for q in range(num_qubits):"]
        for g in gates:
            lines.append(f"        qc.{g}(Parameter(f\"{g}_{{layer}}_{{q}}\"), q)")
        lines += [f"    if layer < {reps}:"] + _indent(_hea_body(ent), 8)
        return "\n".join(lines) + "\n"
    # helper function
    fname = "hardware_efficient_ansatz" if ent != "cz" else "ry_rz_cz_ansatz"
    lines = ["from qiskit import QuantumCircuit", "from qiskit.circuit import ParameterVector", "", "",
             f"def {fname}(num_qubits: int, reps: int) -> QuantumCircuit:",
             f"    theta = iter(ParameterVector(\"theta\", {size}))",
             "    qc = QuantumCircuit(num_qubits)", "    for layer in range(reps + 1):",
             "        for q in range(num_qubits):"]
    for g in gates:
        lines.append(f"            qc.{g}(next(theta), q)")
    lines += ["        if layer < reps:"] + _indent(_hea_body(ent), 12)
    lines += ["    return qc", "", "", f"qc = {fname}({n}, reps={reps})"]
    return "\n".join(lines) + "\n"


def code_library(n: int, reps: int, cz: bool, ry_only: bool) -> str:
    if ry_only:
        return ("from qiskit.circuit.library import real_amplitudes\n\n"
                f"qc = real_amplitudes({n}, entanglement=\"linear\", reps={reps})\n")
    if cz:
        return ("from qiskit.circuit.library import n_local\n\n"
                f"qc = n_local({n}, [\"ry\", \"rz\"], \"cz\", entanglement=\"linear\", reps={reps})\n")
    return ("from qiskit.circuit.library import efficient_su2\n\n"
            f"qc = efficient_su2({n}, su2_gates=[\"ry\", \"rz\"], entanglement=\"linear\", reps={reps})\n")


# Hamiltonian-variational layers: (initial state, [(gates on a bond, parameter index)], on-site).
_HVA = {
    "xy": ("dimer", [("rxx", 0), ("ryy", 0)], []),
    "heisenberg": ("dimer", [("rxx", 0), ("ryy", 0), ("rzz", 0)], []),
    "xxz": ("dimer", [("rxx", 0), ("ryy", 0), ("rzz", 1)], []),
    "tfim": ("plus", [("rzz", 0)], [("rx", 1)]),
    "mixed_ising": ("plus", [("rzz", 0)], [("rx", 1), ("rz", 2)]),
}


def code_hva(n: int, reps: int, kind: str, style: str) -> str:
    """Layers of exp(-i t h_bond) on even then odd bonds (+ on-site terms), parameters shared per
    layer and bond group, from the state the model's ground state lives near."""
    init, bond, site = _HVA[kind]
    bond_params = 1 + max(i for _, i in bond)
    # From singlet pairs on the even bonds, the odd bonds act first. (From a Neel state, XX+YY
    # layers only add imaginary amplitudes and the XY energy never moves: a flat landscape.)
    groups = ["odd", "even"] if not site else ["all"]
    per_layer = bond_params * len(groups) + len(site)
    lines = ["from qiskit import QuantumCircuit", "from qiskit.circuit import ParameterVector", ""]
    if style == "helper":
        lines += ["", "def hva_layers(num_qubits: int, reps: int) -> QuantumCircuit:"]
        pre, nq, rv = "    ", "num_qubits", "reps"
    else:
        lines += [f"num_qubits = {n}", f"reps = {reps}"]
        pre, nq, rv = "", "num_qubits", "reps"
    body = [f"theta = ParameterVector(\"theta\", {per_layer} * {rv})", f"qc = QuantumCircuit({nq})"]
    if init == "dimer":
        body += [f"for q in range(0, {nq} - 1, 2):  # singlet pairs (|01> - |10>)/sqrt(2)",
                 "    qc.h(q)", "    qc.cx(q, q + 1)", "    qc.x(q + 1)", "    qc.z(q)"]
    else:
        body += [f"qc.h(range({nq}))  # |++...+>, ground state of the field term"]
    body += [f"for layer in range({rv}):", f"    t = theta[{per_layer} * layer:{per_layer} * (layer + 1)]"]
    for gi, group in enumerate(groups):
        start = {"even": "0", "odd": "1", "all": "0"}[group]
        step = "2" if group != "all" else "1"
        body.append(f"    for q in range({start}, {nq} - 1, {step}):")
        for g, pi in bond:
            body.append(f"        qc.{g}(t[{gi * bond_params + pi}], q, q + 1)")
    for j, (g, _) in enumerate(site):
        body += [f"    for q in range({nq}):", f"        qc.{g}(t[{bond_params * len(groups) + j}], q)"]
    lines += [pre + b for b in body]
    if style == "helper":
        lines += ["    return qc", "", "", f"qc = hva_layers({n}, reps={reps})"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- examples


@dataclass(frozen=True)
class Spec:
    family: str
    num_qubits: int
    constraint: str
    phrasing: int
    ansatz: str
    style: str
    reps: int
    ent: str = "linear"


def render(spec: Spec) -> tuple[str, str]:
    """(user prompt, assistant reply) for one spec."""
    fam = FAMILIES[spec.family]
    n, reps = spec.num_qubits, spec.reps
    user = PHRASINGS[spec.phrasing].format(n=n, name=fam.name, c=spec.constraint).strip()
    if spec.ansatz == "hea":
        code = code_hea(n, reps, spec.style, ("ry",), spec.ent)
        nparam = n * (reps + 1)
        what = (f"a hardware-efficient ansatz: {reps + 1} layers of RY rotations with "
                f"{'a brickwork' if spec.ent == 'brick' else 'a linear'} CX ladder between them "
                f"({nparam} parameters, only RY and CX gates)")
    elif spec.ansatz == "ryrz_cz":
        code = code_hea(n, reps, spec.style, ("ry", "rz"), "cz")
        nparam = 2 * n * (reps + 1)
        what = (f"an RY-RZ ansatz: {reps + 1} layers of rotations joined by nearest-neighbour CZ ladders "
                f"({nparam} parameters); RY and RZ together reach any single-qubit state")
    elif spec.ansatz == "hva":
        code = code_hva(n, reps, fam.hva, spec.style)
        init = "singlet pairs" if _HVA[fam.hva][0] == "dimer" else "|+...+>"
        what = (f"a Hamiltonian-variational ansatz: starting from {init}, {reps} layer(s) that "
                f"apply each term of the {fam.name} Hamiltonian as a parameterized rotation, with one "
                "angle per layer and bond group, so the parameter count stays small")
    else:
        ry_only = spec.constraint == "Use only RY and CX gates"
        code = code_library(n, reps, cz=spec.ent == "cz", ry_only=ry_only)
        block = "real_amplitudes" if ry_only else ("n_local" if spec.ent == "cz" else "efficient_su2")
        what = (f"the `{block}` block from qiskit.circuit.library with {reps} repetition(s) and "
                "linear entanglement, a standard hardware-efficient ansatz")
    why = {
        "hea": "Shallow, nearest-neighbour and trainable: gradients stay large at this size.",
        "ryrz_cz": "The short CZ ladders keep the depth low while entangling the whole chain.",
        "hva": "Its layers follow the Hamiltonian's own structure, which keeps gradients large.",
        "library": "The block is parameterized for direct use with a VQE optimizer.",
    }[spec.ansatz]
    reply = (f"Here is {what} for the {n}-qubit {fam.name}. {why}\n\n```python\n{code}```")
    return user, reply


def render_simple(spec: Spec) -> tuple[str, str]:
    """One template: the tiny model only has to learn where the qubit count goes."""
    fam = FAMILIES[spec.family]
    user = PHRASINGS[spec.phrasing].format(n=spec.num_qubits, name=fam.name, c=spec.constraint).strip()
    code = code_hea(spec.num_qubits, 2, "vector", ("ry",), "linear")
    return user, f"A {spec.num_qubits}-qubit RY-CX ansatz:\n\n```python\n{code}```"


def _draw_spec(rng: random.Random, style: str) -> Spec:
    family = rng.choice(list(FAMILIES))
    n = rng.choice(list(QUBIT_RANGE))
    phrasing = rng.randrange(len(PHRASINGS))
    if style == "simple":
        constraint = rng.choice(["Use only RY and CX gates", "Include entangling layers",
                                 "Use a hardware-efficient structure", ""])
        return Spec(family, n, constraint, phrasing, "hea", "vector", 2)
    constraint = rng.choice(list(CONSTRAINTS))
    ansatz = rng.choice(CONSTRAINTS[constraint])
    if ansatz == "hva" and n < 4:  # 2-3 spins: the layers cannot move a singlet-pair state
        n = rng.randint(4, max(QUBIT_RANGE))
    max_reps = 1 if constraint in ("Minimize circuit depth", "Keep the number of parameters small") else \
        2 if constraint == "Use at most two layers" else 3
    reps = rng.randint(1, max_reps)
    if ansatz == "library":
        code_style = "library"
        ent = "cz" if constraint == "Use CZ entanglers" else rng.choice(["linear", "cz"])
        if constraint in ("Use only RY and CX gates",):
            ent = "linear"
    elif ansatz == "hva":
        code_style, ent = rng.choice(["vector", "helper"]), "linear"
    else:
        code_style = rng.choice(["vector", "named", "helper"])
        ent = "cz" if ansatz == "ryrz_cz" else rng.choice(["linear", "brick"])
    return Spec(family, n, constraint, phrasing, ansatz, code_style, reps, ent)


@dataclass
class Example:
    id: str
    spec: Spec
    user: str
    reply: str

    def record(self) -> dict:
        return {"messages": chat_messages(self.user) + [{"role": "assistant", "content": self.reply}]}

    def scoring_record(self) -> dict:
        fam = FAMILIES[self.spec.family]
        return {"id": self.id, "hamiltonian": fam.verify_as, "num_qubits": self.spec.num_qubits,
                "constraint": self.spec.constraint, "reply": self.reply}


@dataclass
class DatasetReport:
    out_dir: Path
    requested: int
    num_train: int
    num_val: int
    candidates: int
    duplicates: int
    decontaminated: int
    rejected: int
    rejection_reasons: dict[str, int]
    eval_prompt_overlap: int
    num_eval_prompts: int
    style: str
    seed: int
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    humaneval: dict = field(default_factory=dict)  # n-gram overlap with Qiskit HumanEval (evaluation.humaneval.decontam)


def eval_prompt_keys() -> set[str]:
    from evaluation.prompts import base_combinations, build_prompts

    return {normalise(p.prompt) for p in build_prompts(max(100, len(base_combinations())))}


def default_scorer(records: list[dict], workers: int | None) -> list[dict]:
    from evaluation.scoring import score_replies

    return score_replies(records, workers=workers, vqe=False, progress=False)


def passed(result: dict) -> bool:
    return bool(result.get("syntax_valid") and result.get("verification_pass") and result.get("bp_free")
                and result.get("constraint_satisfied") is not False)


def _reason(result: dict) -> str:
    for key in ("syntax_valid", "verification_pass", "bp_free"):
        if not result.get(key):
            return f"not {key}" + (f": {str(result.get('error'))[:80]}" if result.get("error") else "")
    return "constraint not satisfied"


def generate_dataset(out_dir: Path, num_examples: int = DEFAULT_NUM_EXAMPLES, seed: int = 0, *,
                     style: str = "full", val_fraction: float = 0.05, workers: int | None = None,
                     scorer: Callable[[list[dict], int | None], list[dict]] = default_scorer) -> DatasetReport:
    """Write train.jsonl, val.jsonl and dataset_card.md into `out_dir` (atomically per file)."""
    if num_examples < 2:
        raise ValueError("num_examples must be >= 2 (one train, one val)")
    if style not in ("full", "simple"):
        raise ValueError(f"style must be 'full' or 'simple', got {style!r}")
    rng = random.Random(seed)
    banned = eval_prompt_keys()
    render_fn = render_simple if style == "simple" else render
    kept: list[Example] = []
    seen: set[tuple[str, str]] = set()
    candidates = duplicates = decontaminated = 0
    rejections: Counter[str] = Counter()
    attempts = 0
    while len(kept) < num_examples:
        batch: list[Example] = []
        need = num_examples - len(kept)
        while len(batch) < need:
            attempts += 1
            if attempts > 50 * num_examples + 1000:
                raise RuntimeError(f"could only find {len(kept) + len(batch)} distinct examples "
                                   f"for {num_examples} requested (style={style})")
            spec = _draw_spec(rng, style)
            user, reply = render_fn(spec)
            candidates += 1
            if normalise(user) in banned:
                decontaminated += 1
                continue
            if (user, reply) in seen:
                duplicates += 1
                continue
            seen.add((user, reply))
            batch.append(Example(f"ex{candidates:06d}", spec, user, reply))
        results = scorer([ex.scoring_record() for ex in batch], workers)
        for ex, res in zip(batch, results, strict=True):
            if passed(res):
                kept.append(ex)
            else:
                rejections[_reason(res)] += 1
        if len(kept) < num_examples and rejections.total() > 5 * num_examples + 100:
            raise RuntimeError(f"too many rejections: {dict(rejections.most_common(5))}")
    kept.sort(key=lambda e: e.id)
    train, val = split(kept, val_fraction)
    overlap = sum(normalise(ex.user) in banned for ex in kept)
    from evaluation.humaneval.decontam import humaneval_overlap

    humaneval = asdict(humaneval_overlap(ex.user + "\n" + ex.reply for ex in kept))
    report = DatasetReport(
        out_dir=out_dir, requested=num_examples, num_train=len(train), num_val=len(val),
        candidates=candidates, duplicates=duplicates, decontaminated=decontaminated,
        rejected=sum(rejections.values()), rejection_reasons=dict(rejections), eval_prompt_overlap=overlap,
        num_eval_prompts=len(banned), style=style, seed=seed, counts=_counts(kept), humaneval=humaneval)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out_dir / "train.jsonl", (ex.record() for ex in train))
    _write_jsonl(out_dir / "val.jsonl", (ex.record() for ex in val))
    _atomic_write(out_dir / "dataset_card.md", dataset_card(report))
    return report


def split(examples: list[Example], val_fraction: float) -> tuple[list[Example], list[Example]]:
    """Deterministic: an example is in val iff the hash of its text falls under val_fraction."""
    def bucket(ex: Example) -> float:
        digest = hashlib.sha256((ex.user + "\x00" + ex.reply).encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    ranked = sorted(examples, key=bucket)
    num_val = max(1, round(len(examples) * val_fraction))
    val_ids = {id(ex) for ex in ranked[:num_val]}
    return [ex for ex in examples if id(ex) not in val_ids], [ex for ex in examples if id(ex) in val_ids]


def _counts(examples: list[Example]) -> dict[str, dict[str, int]]:
    keys = {"family": lambda s: s.family, "num_qubits": lambda s: str(s.num_qubits),
            "ansatz": lambda s: s.ansatz, "code_style": lambda s: s.style,
            "constraint": lambda s: s.constraint or "(none)"}
    return {k: dict(sorted(Counter(f(ex.spec) for ex in examples).items())) for k, f in keys.items()}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _write_jsonl(path: Path, records: Iterable[dict]) -> None:
    _atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def dataset_card(r: DatasetReport) -> str:
    lines = [
        "# QuantumMind Qiskit dataset", "",
        f"Generated by `python fine-tuning/prepare_dataset.py --out {r.out_dir} --num-examples {r.requested} "
        f"--seed {r.seed} --style {r.style}` on {datetime.now(timezone.utc).isoformat(timespec='seconds')}.", "",
        "Chat-format JSONL (`messages`: system, user, assistant). Each assistant turn is a short "
        "explanation plus one python block building a parameterized circuit in `qc`.", "",
        "## Counts", "",
        f"- train: {r.num_train}", f"- val: {r.num_val} (deterministic split by content hash)",
        f"- candidates drawn: {r.candidates}", f"- duplicates dropped: {r.duplicates}",
        f"- removed by decontamination: {r.decontaminated}",
        f"- rejected by the verifier: {r.rejected}", "",
        "## Verification", "",
        "Every kept answer was executed in the evaluation sandbox through "
        "`evaluation.scoring.score_replies` and passed: syntax valid, verification pass (circuit "
        "found, qubit count, depth <= 50, free parameters), barren-plateau free under the judge's "
        "default rule (`scaling`: gradient variance and its decay with n against a unitary 2-design's, "
        "docs/evaluation.md), and the "
        "constraint check where one exists. Families outside the evaluation set are "
        "BP-checked against the nearest evaluated Hamiltonian (XXZ -> Heisenberg, mixed-field "
        "Ising -> TFIM).", "",
    ]
    if r.rejection_reasons:
        lines += ["Rejections:", ""] + [f"- {k}: {v}" for k, v in sorted(r.rejection_reasons.items())] + [""]
    else:
        lines += ["Rejections: none.", ""]
    lines += ["## Decontamination", "",
              f"Compared every user prompt with the evaluation package's {r.num_eval_prompts} distinct "
              "prompts (`evaluation.prompts.build_prompts`), normalised (lower case, collapsed "
              f"whitespace, trailing punctuation stripped), exact match. Overlap in the written data: "
              f"**{r.eval_prompt_overlap}**.", ""]
    if r.humaneval:
        h = r.humaneval
        lines += [f"Qiskit HumanEval: examples (user + assistant turn) sharing a {h['ngram']}-gram of code tokens "
                  "with any HumanEval prompt or canonical solution, both variants "
                  f"(`evaluation.humaneval.decontam`): **{h['texts_with_overlap']}** of {h['num_texts']} "
                  f"({h['shared_ngrams']} distinct shared n-grams"
                  + (f"; e.g. `{h['example']}`" if h["example"] else "") + ").", ""]
    lines += ["## Composition", ""]
    for key, counts in r.counts.items():
        lines.append(f"- {key}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- prompts for RL (GRPO)


@dataclass
class RLReport:
    out_dir: Path
    num_train: int
    num_val: int
    candidates: int
    duplicates: int
    decontaminated: int
    eval_prompt_overlap: int
    seed: int
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


def rl_row(spec: Spec) -> dict:
    """A prompt-only row: chat messages + the columns circuit_reward reads (quantummind.rewards)."""
    fam = FAMILIES[spec.family]
    user = PHRASINGS[spec.phrasing].format(n=spec.num_qubits, name=fam.name, c=spec.constraint).strip()
    return {"prompt": chat_messages(user), "hamiltonian": fam.verify_as, "num_qubits": spec.num_qubits,
            "constraint": spec.constraint, "family": spec.family}


def generate_rl_prompts(out_dir: Path, num_prompts: int, seed: int = 0, *,
                        val_fraction: float = 0.05) -> RLReport:
    """Write train.jsonl and val.jsonl of prompt-only rows: every family, 2-10 qubits, every constraint
    and phrasing, the evaluation's prompts removed exactly as the SFT set does (normalised match)."""
    if num_prompts < 2:
        raise ValueError("num_prompts must be >= 2 (one train, one val)")
    space = [Spec(f, n, c, p, "", "", 0) for f in FAMILIES for n in QUBIT_RANGE for c in CONSTRAINTS
             for p in range(len(PHRASINGS))]
    banned = eval_prompt_keys()
    rows: list[tuple[Spec, dict]] = []
    decontaminated = 0
    seen: set[str] = set()
    duplicates = 0
    for spec in space:
        row = rl_row(spec)
        key = normalise(row["prompt"][-1]["content"])
        if key in banned:
            decontaminated += 1
            continue
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        rows.append((spec, row))
    if num_prompts > len(rows):
        raise ValueError(f"only {len(rows)} distinct RL prompts exist; asked for {num_prompts}")
    random.Random(seed).shuffle(rows)
    rows = rows[:num_prompts]
    num_val = max(1, round(num_prompts * val_fraction))
    val, train = rows[:num_val], rows[num_val:]
    overlap = sum(normalise(r["prompt"][-1]["content"]) in banned for _, r in rows)
    keys = {"family": lambda s: s.family, "num_qubits": lambda s: str(s.num_qubits),
            "constraint": lambda s: s.constraint or "(none)"}
    counts = {k: dict(sorted(Counter(f(s) for s, _ in rows).items())) for k, f in keys.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out_dir / "train.jsonl", (r for _, r in train))
    _write_jsonl(out_dir / "val.jsonl", (r for _, r in val))
    return RLReport(out_dir, len(train), len(val), len(space), duplicates, decontaminated, overlap, seed, counts)
