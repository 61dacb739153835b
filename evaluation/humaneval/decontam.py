"""Decontamination: n-gram overlap between training texts and Qiskit HumanEval (prompts + canonical solutions).

Texts are cut into code tokens (identifiers, numbers, single punctuation characters; lower-cased, so layout
and case do not matter); a training text overlaps when it shares at least one n-gram of NGRAM tokens with
any task's prompt or canonical solution in either variant (13-grams, as in the GPT-3 paper's
decontamination). fine-tuning/prepare_dataset.py reports it in the dataset card.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable

from evaluation.humaneval.tasks import VARIANTS, load_tasks

NGRAM = 13
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+|[^\sA-Za-z0-9_]")


def tokens(text: str) -> list[str]:
    return [t.lower() for t in _TOKEN.findall(text)]


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    toks = tokens(text)
    return {tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)}


@lru_cache(maxsize=4)
def humaneval_ngrams(n: int = NGRAM) -> frozenset[tuple[str, ...]]:
    """Every n-gram of every prompt and canonical solution, both variants (tests are not model input)."""
    out: set[tuple[str, ...]] = set()
    for variant in VARIANTS:
        for t in load_tasks(variant):
            out |= ngrams(t.prompt, n) | ngrams(t.canonical_solution, n)
    return frozenset(out)


@dataclass
class Overlap:
    ngram: int
    num_texts: int
    texts_with_overlap: int
    shared_ngrams: int
    overlapping: list[int] = field(default_factory=list)   # indices of the first overlapping texts (10 at most)
    example: str | None = None                              # one shared n-gram, tokens joined by spaces


def humaneval_overlap(texts: Iterable[str], n: int = NGRAM) -> Overlap:
    ref = humaneval_ngrams(n)
    shared: set[tuple[str, ...]] = set()
    hits: list[int] = []
    count = 0
    for i, text in enumerate(texts):
        count += 1
        common = ngrams(text, n) & ref
        if common:
            hits.append(i)
            shared |= common
    example = " ".join(min(shared)) if shared else None
    return Overlap(ngram=n, num_texts=count, texts_with_overlap=len(hits), shared_ngrams=len(shared),
                   overlapping=hits[:10], example=example)
