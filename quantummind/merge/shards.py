"""Read and write safetensors files one tensor at a time.

The format is an 8-byte little-endian header length, a JSON header mapping names to
{dtype, shape, data_offsets}, then the raw bytes. Reading a tensor is a seek + readinto of
exactly its bytes, so a shard is never held whole; writing needs the header up front, which
the merge can compute (it changes no shape except the vocabulary rows, known in advance), so
tensors are streamed to disk as they are produced.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
ALIGN = 8  # header padded so tensor data starts 8-byte aligned, as the reference writer does


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute file offset
    nbytes: int


class SafetensorsReader:
    """Lazy reader over one .safetensors file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fh: BinaryIO = open(self.path, "rb")
        try:
            (hlen,) = struct.unpack("<Q", self._fh.read(8))
            header = json.loads(self._fh.read(hlen))
        except Exception as exc:
            self._fh.close()
            raise ValueError(f"{self.path}: not a safetensors file ({exc})") from exc
        header.pop("__metadata__", None)
        base = 8 + hlen
        self.infos: dict[str, TensorInfo] = {}
        for name, h in header.items():
            if h["dtype"] not in DTYPES:
                raise ValueError(f"{self.path}: tensor {name} has unsupported dtype {h['dtype']}")
            begin, end = h["data_offsets"]
            self.infos[name] = TensorInfo(name, h["dtype"], tuple(h["shape"]), base + begin, end - begin)

    def names(self) -> list[str]:
        """Tensor names in file order (the order their bytes are laid out)."""
        return sorted(self.infos, key=lambda n: self.infos[n].start)

    def get(self, name: str) -> torch.Tensor:
        info = self.infos[name]
        buf = torch.empty(info.nbytes, dtype=torch.uint8)
        self._fh.seek(info.start)
        if info.nbytes and self._fh.readinto(memoryview(buf.numpy())) != info.nbytes:
            raise ValueError(f"{self.path}: truncated data for {name}")
        return buf.view(DTYPES[info.dtype]).reshape(info.shape)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "SafetensorsReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * torch.empty((), dtype=self.dtype).element_size()


class SafetensorsWriter:
    """Writes one .safetensors file whose tensor list is fixed up front; tensors must be
    written in plan order and match the planned dtype/shape."""

    def __init__(self, path: str | Path, plan: list[PlannedTensor]):
        self.path = Path(path)
        self.plan = plan
        header: dict = {"__metadata__": {"format": "pt"}}
        offset = 0
        for t in plan:
            header[t.name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                              "data_offsets": [offset, offset + t.nbytes]}
            offset += t.nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-(len(raw) + 8) % ALIGN)
        self._fh: BinaryIO = open(self.path, "wb")
        self._fh.write(struct.pack("<Q", len(raw)))
        self._fh.write(raw)
        self._next = 0

    def write(self, name: str, tensor: torch.Tensor) -> None:
        expected = self.plan[self._next]
        if name != expected.name or tensor.dtype != expected.dtype or tuple(tensor.shape) != expected.shape:
            raise RuntimeError(f"writer expected {expected}, got {name} {tensor.dtype} {tuple(tensor.shape)}")
        data = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
        self._fh.write(memoryview(data))
        self._next += 1

    @property
    def complete(self) -> bool:
        return self._next == len(self.plan)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            self._fh.close()
        if not self.complete:
            raise RuntimeError(f"{self.path}: closed after {self._next} of {len(self.plan)} tensors")

    def abort(self) -> None:
        """Close the file unfinished, without the completeness check (the caller removes it)."""
        if not self._fh.closed:
            self._fh.close()


def parse_size(text: str | int) -> int:
    """'5GB' / '500MB' / '2GiB' / 1000 -> bytes (decimal units as transformers' max_shard_size)."""
    if isinstance(text, int):
        return text
    s = text.strip().upper()
    units = {"TIB": 2**40, "GIB": 2**30, "MIB": 2**20, "KIB": 2**10, "TB": 10**12, "GB": 10**9, "MB": 10**6,
             "KB": 10**3, "B": 1}
    for unit, mult in units.items():
        if s.endswith(unit):
            number = s[: -len(unit)].strip()
            break
    else:
        number, mult = s, 1
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"bad size {text!r}: use e.g. 5GB, 500MB, 2GiB") from None
    if value <= 0:
        raise ValueError(f"bad size {text!r}: must be positive")
    return int(value * mult)


def split_into_shards(plan: list[PlannedTensor], max_bytes: int) -> list[list[PlannedTensor]]:
    """Greedy split in order, like transformers: a tensor bigger than the limit gets its own shard."""
    shards: list[list[PlannedTensor]] = [[]]
    used = 0
    for t in plan:
        if shards[-1] and used + t.nbytes > max_bytes:
            shards.append([])
            used = 0
        shards[-1].append(t)
        used += t.nbytes
    return shards


def shard_names(count: int) -> list[str]:
    if count == 1:
        return ["model.safetensors"]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
