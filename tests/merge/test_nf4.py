"""Our torch 4-bit round trip must be bit-identical to bitsandbytes' (the CPU backend)."""

from __future__ import annotations

import pytest
import torch

from quantummind.merge.nf4 import dynamic_map, roundtrip_4bit

bnb_F = pytest.importorskip("bitsandbytes.functional")


def test_dynamic_map_matches_bitsandbytes():
    assert torch.equal(dynamic_map(), bnb_F.create_dynamic_map())


@pytest.mark.parametrize("shape", [(256, 256), (512, 128), (1000, 77), (64, 3), (3, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("blocksize", [32, 64, 128])
@pytest.mark.parametrize("double_quant", [True, False])
def test_roundtrip_bit_exact(shape, dtype, quant_type, blocksize, double_quant):
    gen = torch.Generator().manual_seed(hash((shape, blocksize)) % 2**31)
    w = (torch.randn(shape, generator=gen) * 0.02).to(dtype)
    q, state = bnb_F.quantize_4bit(w.contiguous(), blocksize=blocksize, quant_type=quant_type,
                                   compress_statistics=double_quant)
    ref = bnb_F.dequantize_4bit(q, state)
    ours = roundtrip_4bit(w, quant_type=quant_type, blocksize=blocksize, double_quant=double_quant)
    assert ours.dtype == torch.float32 and ours.shape == w.shape
    assert torch.equal(ours.to(dtype), ref)


def test_roundtrip_changes_weights_and_rejects_bad_settings():
    w = torch.randn(128, 64) * 0.02
    assert not torch.equal(roundtrip_4bit(w), w)
    with pytest.raises(ValueError):
        roundtrip_4bit(w, blocksize=48)
    with pytest.raises(ValueError):
        roundtrip_4bit(w, quant_type="int4")
