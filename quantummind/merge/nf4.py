"""4-bit (NF4/FP4) quantize -> dequantize round trip, as bitsandbytes does it, in plain torch.

A QLoRA adapter learned to correct the *4-bit* base, not the original one, so a faithful merge
adds the delta to dequant(quant(W)). This re-implements bitsandbytes 0.50's reference
algorithm (blockwise absmax scaling, nearest code by midpoint bucketing, optional "double
quant" of the absmax values with the 8-bit dynamic map in blocks of 256) so the merge path
does not import bitsandbytes. tests/merge/test_nf4.py proves it bit-exact against
bitsandbytes.functional.quantize_4bit/dequantize_4bit.
"""

from __future__ import annotations

from functools import lru_cache

import torch

NF4_CODE = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
)
FP4_RAW = (0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0, -0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0)
BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
NESTED_BLOCKSIZE = 256


@lru_cache(maxsize=None)
def code_4bit(quant_type: str) -> torch.Tensor:
    if quant_type == "nf4":
        return torch.tensor(NF4_CODE, dtype=torch.float32)
    if quant_type == "fp4":
        data = torch.tensor(FP4_RAW, dtype=torch.float32)
        return data.div_(data.abs().max())
    raise ValueError(f"4-bit quant type must be nf4 or fp4, got {quant_type!r}")


@lru_cache(maxsize=None)
def dynamic_map() -> torch.Tensor:
    """bitsandbytes' signed 8-bit dynamic map (create_dynamic_map(True, 7, 8))."""
    data: list[float] = []
    max_exponent_bits, non_sign_bits = 7, 7
    for i in range(max_exponent_bits):
        items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1)
        boundaries = torch.linspace(0.1, 1, items, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    data += [0, 1.0]
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


def _blockwise_absmax_scaled(flat: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = flat.numel()
    rem = n % blocksize
    full = n - rem
    blocks = flat[:full].reshape(full // blocksize, blocksize)
    absmax = blocks.abs().max(dim=-1)[0]
    scaled = torch.clamp(blocks * (1.0 / absmax.clamp(min=1e-38).view(-1, 1)), -1, 1).reshape(-1)
    if rem:
        am = flat[full:].abs().max().clamp(min=1e-38)
        absmax = torch.cat([absmax, am.unsqueeze(0)])
        scaled = torch.cat([scaled, torch.clamp(flat[full:] / am, -1, 1)])
    return scaled, absmax


def _scale_back(values: torch.Tensor, absmax: torch.Tensor, blocksize: int) -> torch.Tensor:
    n = values.numel()
    rem = n % blocksize
    if not rem:
        return (values.view(-1, blocksize) * absmax.view(-1, 1)).reshape(n)
    full = n - rem
    out = torch.empty(n, dtype=torch.float32)
    out[:full] = (values[:full].view(-1, blocksize) * absmax[: full // blocksize].view(-1, 1)).reshape(full)
    out[full:] = values[full:] * absmax[full // blocksize]
    return out


def _nearest(scaled: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    order = torch.argsort(code)
    sorted_code = code[order]
    bounds = (sorted_code[:-1] + sorted_code[1:]) / 2
    return order[torch.bucketize(scaled, bounds)]


LUT_SIZE = 65536


@lru_cache(maxsize=None)
def _dynamic_lut() -> torch.Tensor:
    """bitsandbytes' CPU 8-bit quantizer does not binary-search the code: it snaps x/absmax to
    one of 65536 grid points in [-1, 1] and looks up the code nearest to that grid point."""
    code = dynamic_map()
    midpoints = 0.5 * (code[:-1] + code[1:])
    grid = -1.0 + (2.0 * torch.arange(LUT_SIZE, dtype=torch.float32)) / (LUT_SIZE - 1)
    return torch.searchsorted(midpoints, grid, right=False)


def _quantize_8bit_dynamic(x: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = x.numel()
    nb = -(-n // blocksize)
    padded = torch.nn.functional.pad(x, (0, nb * blocksize - n)).view(nb, blocksize)
    absmax = padded.abs().max(dim=-1)[0]
    inv = torch.where(absmax == 0, torch.zeros_like(absmax), 1.0 / absmax)
    normed = (padded * inv.view(-1, 1)).clamp(-1.0, 1.0)
    grid_idx = (((normed + 1.0) * 0.5) * (LUT_SIZE - 1) + 0.5).to(torch.int64)
    idx = _dynamic_lut()[grid_idx]
    idx = torch.where((absmax == 0).view(-1, 1), torch.zeros_like(idx), idx)
    return idx.reshape(-1)[:n], absmax


def _double_quant_roundtrip(absmax: torch.Tensor) -> torch.Tensor:
    """What bitsandbytes hands the 4-bit dequantizer when compress_statistics=True."""
    offset = absmax.mean()
    idx, absmax2 = _quantize_8bit_dynamic(absmax - offset, NESTED_BLOCKSIZE)
    return _scale_back(dynamic_map()[idx], absmax2, NESTED_BLOCKSIZE) + offset


def roundtrip_4bit(weight: torch.Tensor, *, quant_type: str = "nf4", blocksize: int = 64,
                   double_quant: bool = True) -> torch.Tensor:
    """dequantize_4bit(quantize_4bit(weight)) as float32, same shape (bit-exact with bitsandbytes)."""
    if blocksize not in BLOCKSIZES:
        raise ValueError(f"invalid 4-bit blocksize {blocksize} (one of {BLOCKSIZES})")
    code = code_4bit(quant_type)
    flat = weight.reshape(-1).float()
    scaled, absmax = _blockwise_absmax_scaled(flat, blocksize)
    values = code[_nearest(scaled, code)]
    if double_quant:
        absmax = _double_quant_roundtrip(absmax)
    return _scale_back(values, absmax, blocksize).reshape(weight.shape)
