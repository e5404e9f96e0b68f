"""bfloat16 through ml_dtypes gives the bytes the hand-written bit arithmetic it replaced gave, on every class of
float32 bit pattern, and needs no full-size temporary; NaNs, which the old arithmetic turned into infinities or
zeros, stay NaNs of their sign."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from editor.io.tensor_file import encode_into, from_float32, to_float32

HALFWAY = [0x3F808000, 0x3F818000, 0xBF808000, 0x3F807FFF, 0x3F808001, 0x0000_8000, 0x0001_8000, 0x8001_8000]
SUBNORMAL = [0x0000_0001, 0x0000_7FFF, 0x0000_FFFF, 0x007F_FFFF, 0x807F_FFFF, 0x0040_0000, 0x8000_0001]
ZERO_INF = [0x0000_0000, 0x8000_0000, 0x7F80_0000, 0xFF80_0000]
ROUNDS_TO_INF = [0x7F7F_8000, 0x7F7F_FFFF, 0xFF7F_8000, 0xFF7F_FFFF]
STAYS_FINITE = [0x7F7F_7FFF, 0xFF7F_7FFF, 0x7F7E_8000]
NAN = [0x7FC0_0000, 0xFFC0_0000, 0x7F80_0001, 0xFF80_0001, 0x7FFF_FFFF, 0xFFFF_FFFF, 0x7F80_FFFF, 0x7FA0_0000]
NAN += [0x7F80_8000, 0x7FBF_FFFF, 0xFFA0_1234]


def old_from_float32(values: np.ndarray) -> np.ndarray:
    """The bit arithmetic editor used before ml_dtypes: add 0x7FFF plus the kept lowest bit, keep the top half."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    return ((bits + ((bits >> 16) & 1) + np.uint32(0x7FFF)) >> 16).astype(np.uint16)


def patterns() -> np.ndarray:
    rng = np.random.default_rng(0)
    random_bits = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32)
    normal = rng.standard_normal(100_000, dtype=np.float32).view(np.uint32)
    # Every low half on a few high halves: each rounding case (below, at, above halfway; odd and even kept bit).
    low = np.arange(0, 2**16, dtype=np.uint32)
    sweeps = [(np.uint32(high) << 16) | low for high in (0x3F80, 0x3F81, 0x0000, 0x8001, 0x7F7F, 0x4B00)]
    fixed = np.array(HALFWAY + SUBNORMAL + ZERO_INF + ROUNDS_TO_INF + STAYS_FINITE, dtype=np.uint32)
    return np.concatenate([random_bits, normal, *sweeps, fixed])


def test_every_non_nan_pattern_encodes_as_before():
    bits = patterns()
    values = bits.view(np.float32)
    keep = ~np.isnan(values)
    expected = old_from_float32(values[keep])
    assert np.array_equal(from_float32(values[keep], "BF16"), expected)
    out = np.empty(int(keep.sum()), dtype=np.uint16)
    assert encode_into(values[keep].copy(), "BF16", out) is out and np.array_equal(out, expected)
    # Rounding past the largest bfloat16 gives inf, as before and as torch.
    assert set(from_float32(np.array(ROUNDS_TO_INF, np.uint32).view(np.float32), "BF16").tolist()) == {
        0x7F80,
        0xFF80,
    }


def test_nans_stay_nans_of_their_sign():
    values = np.array(NAN, dtype=np.uint32).view(np.float32)
    encoded = from_float32(values, "BF16")
    assert np.isnan(to_float32(encoded, "BF16")).all()
    assert np.array_equal(encoded >> 15, np.array(NAN, dtype=np.uint32) >> 31)  # the sign bit is kept
    # What the old arithmetic did: a NaN whose payload sits in the low half carried into the exponent or sign.
    old = old_from_float32(values)
    assert 0x7F80 in old.tolist() and 0x0000 in old.tolist()


def test_matches_torch_on_every_class():
    torch = pytest.importorskip("torch")
    bits = patterns()
    values = np.concatenate([bits, np.array(NAN, np.uint32)]).view(np.float32)
    ours = from_float32(values, "BF16")
    theirs = torch.from_numpy(values.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(values)
    assert np.array_equal(ours[~nan], theirs[~nan])
    # torch's NaN bits depend on its code path (0x7FC0 scalar, 0xFFFF vectorised): only NaN-ness is comparable.
    assert np.isnan(to_float32(theirs[nan], "BF16")).all() and np.isnan(to_float32(ours[nan], "BF16")).all()


def test_widening_is_exact_for_all_65536_patterns():
    raw = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    widened = to_float32(raw, "BF16")
    assert np.array_equal(widened.view(np.uint32), raw.astype(np.uint32) << 16)
    out = np.empty_like(widened)
    assert to_float32(raw, "BF16", out) is out and np.array_equal(out.view(np.uint32), widened.view(np.uint32))


def test_other_dtypes_cast_as_astype():
    values = patterns().view(np.float32)
    for dtype, numpy_dtype in (("F16", np.float16), ("F32", np.float32), ("F64", np.float64)):
        with np.errstate(over="ignore", invalid="ignore"):
            expected = values.astype(numpy_dtype)
        assert np.array_equal(from_float32(values, dtype).view(np.uint8), expected.view(np.uint8))


def test_encode_into_needs_no_full_size_temporary():
    values = np.random.default_rng(1).standard_normal(4_000_000, dtype=np.float32)  # 16 MB
    out = np.empty(values.size, dtype=np.uint16)
    tracemalloc.start()
    try:
        encode_into(values, "BF16", out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak  # numpy's cast buffers only, not a copy of the 8 MB result or 16 MB input
