"""xgrammar_core's mask kernel on numpy arrays: xgrammar's CPU kernel called with numpy's
pointers and strides must ban exactly the tokens whose bit is 0, only in the rows named, and
leave the padding bits past the vocabulary alone."""

from __future__ import annotations

import numpy as np
import pytest

from toolwire.constraints import xgrammar_core as xgr


@pytest.mark.parametrize("vocab", [49152, 49150, 100])
@pytest.mark.parametrize("density", [0.0, 0.01, 0.5, 0.97, 1.0])
def test_the_kernel_bans_the_zero_bits_of_the_named_rows(vocab, density):
    rng = np.random.default_rng(vocab + int(density * 100))
    words = -(-vocab // 32)
    allowed = rng.random((3, words * 32)) < density
    allowed[:, :64], allowed[:, 64:128] = True, False  # whole words of each kind
    packed = np.packbits(allowed.reshape(3, -1, 8), axis=2, bitorder="little")
    bitmask = packed.reshape(3, -1).view(np.int32).copy()
    rows = rng.standard_normal((3, vocab)).astype(np.float32)
    want = rows.copy()
    want[[0, 2]] = np.where(allowed[[0, 2], :vocab], rows[[0, 2]], -np.inf)
    xgr.apply_token_bitmask_inplace(rows, bitmask, [0, 2])
    assert np.array_equal(rows, want)


def test_the_kernel_takes_float32_rows_and_an_int32_bitmask_only():
    bitmask = xgr.allocate_token_bitmask(2, 64)
    assert bitmask.shape == (2, 2) and (bitmask == -1).all()
    with pytest.raises(ValueError, match="float32"):
        xgr.apply_token_bitmask_inplace(np.zeros((2, 64)), bitmask)
