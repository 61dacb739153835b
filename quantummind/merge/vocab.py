"""Vocabulary bookkeeping: how many token ids the trained tokenizer emits, and growing an
embedding matrix the way transformers' resize_token_embeddings(mean_resizing=True) does."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

COV_CHUNK_ROWS = 8192  # covariance accumulated in row chunks: never a second full fp32 copy


def read_tokenizer_json(tokenizer_dir: Path) -> dict | None:
    """The parsed tokenizer.json of `tokenizer_dir`; None if absent."""
    path = tokenizer_dir / "tokenizer.json"
    return json.loads(path.read_text()) if path.is_file() else None


def tokenizer_vocab_size(data: dict | None) -> int | None:
    """Number of ids the tokenizer can emit (max id + 1), from parsed tokenizer.json data
    (read_tokenizer_json); None if absent."""
    if data is None:
        return None
    ids = [t["id"] for t in data.get("added_tokens", [])]
    vocab = (data.get("model") or {}).get("vocab")
    if isinstance(vocab, dict):
        ids += list(vocab.values())
    elif isinstance(vocab, list):  # unigram: list of [piece, score]
        ids.append(len(vocab) - 1)
    return max(ids) + 1 if ids else None


SAMPLED = "sampled from N(mean, 1e-9 cov) of the old rows"
MEAN_FALLBACK = "the mean of the old rows (their covariance is not positive definite)"


@dataclass
class Resized:
    tensor: torch.Tensor
    new_rows: str | None  # how rows past the old count were initialised (SAMPLED, MEAN_FALLBACK); None: truncated


def mean_resize(old: torch.Tensor, new_rows: int, *, seed: int = 0) -> Resized:
    """Append rows sampled from N(mean, 1e-9 * cov) of the old rows (transformers' mean_resizing);
    the mean itself when that covariance is not positive definite (warned, and recorded in the
    result for merge_report.json). Returns float32. `new_rows` must exceed the old row count
    (resize_rows truncates otherwise)."""
    old32 = old.float()
    n, hidden = old32.shape
    added = new_rows - n
    out = torch.empty((new_rows, hidden), dtype=torch.float32)
    out[:n] = old32
    mean = old32.mean(dim=0)
    cov = torch.zeros((hidden, hidden), dtype=torch.float32)
    for start in range(0, n, COV_CHUNK_ROWS):
        centered = old32[start:start + COV_CHUNK_ROWS] - mean
        cov.addmm_(centered.T, centered)
    cov /= n
    eps_cov = 1e-9 * cov
    gen = torch.Generator().manual_seed(seed)
    chol, info = torch.linalg.cholesky_ex(eps_cov)
    if int(info) == 0:
        noise = torch.randn((added, hidden), generator=gen, dtype=torch.float32)
        out[n:] = mean + noise @ chol.T
        return Resized(out, SAMPLED)
    logger.warning("warning: embedding covariance not positive definite: the %d new rows are set to the mean "
                   "(recorded in merge_report.json)", added)
    out[n:] = mean
    return Resized(out, MEAN_FALLBACK)


def resize_rows(t: torch.Tensor, rows: int) -> Resized:
    """`t` with `rows` rows: grown with mean_resize (float32), or its first `rows` rows."""
    return mean_resize(t, rows) if rows > t.shape[0] else Resized(t[:rows], None)
