"""One thread policy: the bits of training never depend on the thread count.

Every product's output is cut into tiles by a rule on its shape alone
(``fastnn.reference.blas.gemm_blocks``), each tile one single-threaded BLAS call over the
whole inner dimension; the whole-epoch kernels run the tiles on ``n_threads`` threads
while BLAS's own pool is held at one. The shapes below are large enough to be cut (into
4 to 32 tiles, with shorter last ones), so these tests see the threaded code run. No
timing here: speed is benchmarks/compare.py's and benchmarks/scaling.py's job.
"""

import contextlib
import inspect
import os
import subprocess
import sys
import warnings

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_info, threadpool_limits

import fastnn
from fastnn import _blas, _threads
from fastnn.reference import blas
from fastnn.reference import dense as ref_dense
from kernels._support import assert_exact

BACKENDS = ["numpy", "numba", "cython"]
DTYPES = ["float32", "float64"]


def _n_threads_of(args):
    """The n_threads argument of a train_epoch kernel call (bound by the contract's
    signature: the dropout arguments follow it)."""
    from fastnn.reference.training import train_epoch

    return inspect.signature(train_epoch).bind(*args).arguments["n_threads"]


def _scipy_blas_threads():
    return sorted(
        {
            i["num_threads"]
            for i in threadpool_info()
            if i["user_api"] == "blas" and "scipy" in i["filepath"].rsplit("/", 1)[-1]
        }
    )


def test_tiles_depend_on_the_shape_only():
    """The threads' rule (without OpenBLAS's small-matrix cut, test_small_matrix_cut,
    and without the own GEMM's, test_own_gemm_tiles_are_columns_for_16_threads)."""

    def grid(m, n, k):
        return blas.gemm_grid(m, n, k, small_mnk=0, own=False)

    assert blas.gemm_blocks(64, 128, 2) == [(0, 64, 0, 128)]  # small: one tile
    assert grid(128, 256, 256) == (1, 1)  # 2**24 flop: one call
    # from 2**25 flop in 2, the longer side halved first (columns on a tie)
    assert grid(128, 256, 784) == (1, 2)  # config B's first product
    assert grid(784, 256, 128) == (2, 1)  # and its dW
    assert grid(1024, 256, 784) == (2, 1)  # config D
    assert grid(256, 1100, 1030) == (1, 2)
    assert grid(256, 2048, 2048) == (1, 2)  # 2**31 flop (config C): still 2
    assert grid(2048, 2048, 1024) == (2, 2)  # 2**33 flop: 4
    assert grid(4096, 2048, 1024) == (4, 2)  # 2**34 flop: 8
    assert grid(4096, 4096, 1024) == (4, 4)  # 2**35 flop: 16
    assert grid(256, 8192, 8192) == (1, 16)  # 2**35, cut along the columns
    assert grid(20, 20, 10**9) == (1, 1)  # sides too short to cut
    # the units of a side are shared out evenly; the last part ends at the side's end
    assert [blas.gemm_edge(600, 2, i) for i in range(3)] == [0, 304, 600]
    assert [blas.gemm_edge(1100, 2, i) for i in range(3)] == [0, 544, 1100]
    assert [blas.gemm_edge(784, 4, i) for i in range(5)] == [0, 192, 384, 576, 784]


SMALL = 1_000_000  # OpenBLAS's small-matrix limit (100^3) on its SkylakeX core


def test_small_matrix_cut():
    """A product with GEMM_SMALL_K < k <= GEMM_SMALL_MAX_K and small_mnk < m n k <=
    GEMM_SMALL_MAX_MNK is cut into tiles of at most small_mnk (m n k) for
    OpenBLAS's small-matrix kernels, the longer side of the largest tile halved first
    (columns on a tie); out = a @ b^T by its own rule (test_tn_cut); never without
    such kernels."""
    grid = blas.gemm_grid
    assert grid(64, 128, 128, small_mnk=SMALL) == (1, 2)  # digits' second layer
    assert grid(128, 128, 64, True, False, SMALL) == (1, 2)  # and its dW
    assert grid(64, 128, 128, True, True, SMALL) == (1, 2)
    assert grid(64, 64, 128, small_mnk=SMALL) == (1, 1)  # 2**19 m n k: fits whole
    assert grid(128, 256, 256, small_mnk=SMALL) == (2, 8)  # 64 x 32 x 256 tiles
    assert grid(256, 256, 128, True, False, SMALL) == (4, 4)  # 64 x 64 x 128
    assert grid(784, 256, 128, True, False, SMALL) == (8, 4)  # config B's dW1 (2**25 flop)
    assert grid(1024, 256, 256, small_mnk=SMALL) == (16, 8)  # config D's, 2**26 m n k
    assert grid(64, 128, 128, small_mnk=0) == (1, 1)  # no small-matrix kernels
    assert grid(1000, 1000, 4, small_mnk=SMALL) == (1, 1)  # fastnn's own short sums
    assert grid(64, 128, blas.GEMM_SMALL_MAX_K + 1, small_mnk=SMALL) == (1, 1)
    # past the limits, or no tile fitting: the threads' rule (the own GEMM's, where it
    # runs; here without)
    assert grid(128, 256, 784, small_mnk=SMALL, own=False) == _grid0(128, 256, 784) == (1, 2)
    assert grid(2048, 1024, 256, small_mnk=SMALL, own=False) == _grid0(2048, 1024, 256)
    assert grid(784, 256, 128, True, False, 50_000, own=False) == (2, 1)  # 49 row units
    # uneven sides: a part counts as ceil(units / parts) units (100 rows = 7 units: parts
    # of 48 and 52 rows, counted as 64)
    assert grid(100, 64, 200, small_mnk=SMALL) == (2, 1)


def test_tn_cut():
    """out = a @ b^T (OpenBLAS's transposed-A call) in float64: tiles of at most
    GEMM_TN_MAX_OUT outputs (and small_mnk m n k) for GEMM_TN_MIN_K <= k <=
    GEMM_SMALL_MAX_K and m n k <= GEMM_SMALL_MAX_MNK; never in float32."""
    grid = blas.gemm_grid
    assert grid(64, 128, 128, False, True, SMALL) == (2, 4)  # digits' dx2: 32 x 32 tiles
    assert grid(32, 128, 128, False, True, SMALL) == (1, 4)
    assert grid(64, 64, 64, False, True, SMALL) == (2, 2)  # whole fits 10^6, not 1200
    assert grid(1024, 256, 256, False, True, SMALL) == (32, 8)  # config D's dx2, 2**26
    assert grid(2048, 256, 256, False, True, SMALL, own=False) == _grid0(2048, 256, 256)
    assert grid(64, 128, 128, False, True, 0) == (1, 1)  # no small kernels
    assert grid(30, 40, 128, False, True, SMALL) == (1, 1)  # 1200 outputs: taken whole
    assert grid(64, 128, 31, False, True, SMALL) == (1, 1)  # k < 32: packed either way
    assert grid(64, 128, 257, False, True, SMALL) == (1, 1)
    for m, n, k in [(64, 128, 128), (64, 64, 64), (1024, 256, 256)]:
        # float32: the threads' rule alone
        assert grid(m, n, k, False, True, SMALL, True, False) == _grid0(m, n, k)
        # the dtype matters for a @ b^T alone (without the own GEMM's rule)
        want = grid(m, n, k, small_mnk=SMALL, own=False)
        assert grid(m, n, k, False, False, SMALL, True, False) == want
    n64 = len(blas.gemm_blocks(64, 128, 128, False, True, np.float64))
    assert n64 == (8 if blas.GEMM_SMALL_MNK else 1)


def test_small_float32_a_bt_copies_b():
    """A float32 out = a @ b^T with GEMM_SMALL_K < k, n k <= GEMM_COPY_MAX and m n k <=
    GEMM_SMALL_MAX_MNK is a @ bt on a transposed copy bt of b, with that product's
    tiles (on a BLAS with small-matrix kernels); float64, other transpositions and
    larger b keep their own calls."""
    copies = blas.gemm_copies_b
    assert copies(64, 128, 128, False, True, SMALL, True)  # digits' dx2: b 128 x 128
    assert copies(128, 256, 10, False, True, SMALL, True)  # config B's dx3
    assert copies(1, 16384, 5, False, True, SMALL, True) is False  # n k past the buffer
    assert copies(1, 4096, 4, False, True, SMALL, True) is False  # fastnn's own short sums
    assert copies(16384, 16, 256, False, True, SMALL, True)  # m n k = 2**26
    assert not copies(16385, 16, 256, False, True, SMALL, True)
    assert not copies(64, 16, 257, False, True, SMALL, True)  # past GEMM_SMALL_MAX_K
    assert not copies(64, 128, 128, False, True, SMALL, False)  # float64
    assert not copies(64, 128, 128, False, True, 0, True)  # no small-matrix kernels
    for trans in [(False, False), (True, False), (True, True)]:
        assert not copies(64, 128, 128, *trans, SMALL, True)
    tiles = blas.gemm_blocks(64, 128, 128, False, True, np.float32)
    if blas.GEMM_SMALL_MNK:
        assert tiles == blas.gemm_blocks(64, 128, 128, dtype=np.float32)  # a @ bt's: 2
    else:
        assert tiles == [(0, 64, 0, 128)]
    # the product's bits are those of a @ bt through BLAS, whatever bt's memory
    rng = np.random.default_rng(3)
    a = rng.standard_normal((64, 128)).astype(np.float32)
    b = rng.standard_normal((128, 128)).astype(np.float32)
    got = blas.gemm(a, b, np.empty((64, 128), np.float32), False, True)
    bt = np.ascontiguousarray(b.T)
    if blas.GEMM_SMALL_MNK:
        assert_exact(got, blas.gemm(a, bt, np.empty((64, 128), np.float32)))
    np.testing.assert_allclose(got, a @ b.T, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "how, dtype",
    [("numba", "float32"), ("numba", "float64"), ("cython", "float32"), ("loops", "float32")],
)
@pytest.mark.parametrize("n, k", [(1, 1), (16, 16), (128, 128), (128, 10), (48, 100), (33, 17)])
def test_transposed_copy_is_exact(n, k, how, dtype):
    """The kernels' transposed copy of b (16 x 16 blocks in registers, then the edges:
    Numba's, Cython's, and Cython's fallback loops, which run only on a core without
    AVX-512) holds b^T's bits, NaN payloads and zero signs included; Numba's writes
    nothing past k x n of its buffer."""
    rng = np.random.default_rng(n * k)
    b = rng.standard_normal((n, k)).astype(dtype)
    b.flat[::7] = -0.0
    b.flat[1::9] = np.inf
    b.flat[4::13] = -np.inf
    single = np.dtype(dtype) == np.float32
    bits = b.view(np.uint32 if single else np.uint64)
    bits.flat[2::11] |= 0x7F800001 if single else 0x7FF0000000000001  # NaNs
    if how == "numba":
        common = pytest.importorskip("fastnn._kernels._numba_common")
        raw = np.full(k * n + 16, 7.0, dtype)
        bt = raw[: k * n].reshape(k, n)
        common._transpose(b, bt)
        assert (raw[k * n :] == 7.0).all()
    else:
        from fastnn._kernels import dense_cython

        bt = dense_cython._transposed_copy(b, how == "cython")
    np.testing.assert_array_equal(bt.view(bits.dtype), bits.T)


@pytest.mark.parametrize("what", ["dtype", "layout", "readonly", "b layout", "b ints"])
def test_transpose16_refuses_other_arrays_when_compiled(what):
    """Numba's 16 x 16 register transpose loads and stores whole rows of b and bt as
    vectors of b's dtype: a bt of another dtype, not C-contiguous or read-only, or a b
    not C-contiguous or not float, is refused when the calling function compiles, never
    transposed into wrong memory."""
    common = pytest.importorskip("fastnn._kernels._numba_common")
    import numba
    from numba.core.errors import TypingError

    @numba.njit
    def call(b, bt):
        common._transpose16(b, 0, 16, bt, 0, 16)

    b = np.ones((16, 16), np.float32)
    bt = np.zeros((16, 16), np.float32)
    call(b, bt)  # the arrays the kernels pass
    assert (bt == 1).all()
    if what == "dtype":
        bt = np.zeros((16, 16), np.float64)
    elif what == "layout":
        bt = np.asfortranarray(bt)
    elif what == "readonly":
        bt.flags.writeable = False
    elif what == "b layout":
        b = np.asfortranarray(b)
    else:
        b, bt = np.ones((16, 16), np.int32), np.zeros((16, 16), np.int32)
    with pytest.raises(TypingError, match="_transpose16"):
        call(b, bt)


@settings(max_examples=300, deadline=None)
@given(
    m=st.integers(1, 600),
    n=st.integers(1, 600),
    k=st.integers(1, 300),
    trans=st.sampled_from([(False, False), (True, False), (False, True), (True, True)]),
    small=st.sampled_from([0, 50_000, SMALL]),
    single=st.booleans(),
)
def test_small_matrix_tiles_fit(m, n, k, trans, small, single):
    rows, cols = blas.gemm_grid(m, n, k, *trans, small, single)
    if small == blas.GEMM_SMALL_MNK:
        dtype = np.float32 if single else np.float64
        made = trans
        if blas.gemm_copies_b(m, n, k, *trans, small, single):
            made = (False, False)  # a @ bt on b's transposed copy
        want = blas.gemm_grid(m, n, k, *made, small, single)
        assert len(blas.gemm_blocks(m, n, k, *trans, dtype)) == want[0] * want[1]
    threads = blas.gemm_grid(m, n, k, *trans, 0, single)  # the threads' rule (no small cut)
    if (rows, cols) != threads:
        tn = trans == (False, True)
        assert small > 0
        if tn:
            assert blas.GEMM_TN_MIN_K <= k <= blas.GEMM_SMALL_MAX_K
            assert m * n > blas.GEMM_TN_MAX_OUT and m * n * k <= blas.GEMM_SMALL_MAX_MNK
            assert not single
        else:
            assert blas.GEMM_SMALL_K < k <= blas.GEMM_SMALL_MAX_K
            assert small < m * n * k <= blas.GEMM_SMALL_MAX_MNK
        for i in range(rows):
            for j in range(cols):
                tile_m = blas.gemm_edge(m, rows, i + 1) - blas.gemm_edge(m, rows, i)
                tile_n = blas.gemm_edge(n, cols, j + 1) - blas.gemm_edge(n, cols, j)
                assert 0 < tile_m * tile_n * k <= small
                assert not tn or tile_m * tile_n <= blas.GEMM_TN_MAX_OUT


SIDES = st.integers(0, 5000)


def _grid0(m, n, k):
    """The threads' rule alone: no small-matrix cut, no own GEMM."""
    return blas.gemm_grid(m, n, k, small_mnk=0, own=False)


def _count(m, n, k):
    """Tiles of the threads' rule (the small-matrix cut, below it, follows call costs)."""
    rows, cols = _grid0(m, n, k)
    return rows * cols


@settings(max_examples=300, deadline=None)
@given(m=SIDES, n=SIDES, k=st.integers(0, 10**5))
def test_tiles_cover_the_output_once_on_unit_edges(m, n, k):
    tiles = blas.gemm_blocks(m, n, k)
    hit = np.zeros((m, n), np.int8)
    for r0, r1, c0, c1 in tiles:
        assert 0 <= r0 < r1 <= m or (m == 0 and r0 == r1 == 0)
        assert 0 <= c0 < c1 <= n or (n == 0 and c0 == c1 == 0)
        # edges on GEMM_UNIT multiples, except the output's own end
        for edge, side in ((r0, m), (r1, m), (c0, n), (c1, n)):
            assert edge % blas.GEMM_UNIT == 0 or edge == side
        hit[r0:r1, c0:c1] += 1
    assert (hit == 1).all()
    rows, cols = blas.gemm_grid(m, n, k)
    assert len(tiles) == rows * cols
    if 2 * m * n * k < blas.GEMM_SPLIT_FLOPS:  # one call, or tiles of the small kernels
        assert rows * cols == 1 or m * n * k > blas.GEMM_SMALL_MNK > 0


@settings(max_examples=300, deadline=None)
@given(
    m=SIDES,
    n=SIDES,
    k=st.integers(0, 10**5),
    dm=st.integers(0, 3000),
    dn=st.integers(0, 3000),
    dk=st.integers(0, 10**5),
)
def test_tile_count_never_falls_as_a_product_grows(m, n, k, dm, dn, dk):
    count = _count(m, n, k)
    assert _count(m + dm, n, k) >= count
    assert _count(m, n + dn, k) >= count
    assert _count(m, n, k + dk) >= count
    assert _count(m + dm, n + dn, k + dk) >= count


def test_large_products_have_tiles_for_16_threads():
    """From 2**35 flops a product with sides long enough has 16 tiles or more; from
    2**25, 2 (every product that a second core repays)."""
    for m, n, k in [(4096, 4096, 1024), (8192, 4096, 512), (4096, 4096, 4096), (256, 8192, 8192)]:
        assert _count(m, n, k) >= 16, (m, n, k)
    for m, n, k in [(128, 256, 784), (256, 2048, 1024), (1024, 2048, 256)]:
        assert _count(m, n, k) >= 2, (m, n, k)


def test_own_gemm_tiles_are_columns_for_16_threads():
    """Where fastnn's own GEMM runs, a product with k > GEMM_SMALL_K is cut in columns
    of at least GEMM_OWN_MIN_COLS (one row of tiles, whose op(a) is packed once for all
    of them), into a count that doubles with the product past 2**27 flops, at most
    GEMM_OWN_MAX_TILES; rows only once the columns are used up; float32 and float64
    alike. Short k and a host without the own GEMM keep the threads' rule."""

    def grid(m, n, k, single=True, own=True):
        return blas.gemm_grid(m, n, k, small_mnk=SMALL, single=single, own=own)

    assert grid(128, 256, 784) == (1, 2)  # config B's first product, 2**25.6 flops
    assert grid(1024, 256, 784) == (1, 4)  # config D's
    assert grid(256, 2048, 1024) == (1, 16)  # config C's: 2**30 flops
    assert grid(256, 2048, 2048) == (1, 32)
    assert grid(1024, 2048, 256) == (1, 16)
    assert grid(2048, 2048, 256) == (1, 32)
    assert grid(256, 2**16, 4096) == (1, 64)  # at most 64
    assert grid(8192, 128, 4096) == (32, 2)  # 128 columns: 2 parts, then rows
    assert grid(256, 2048, 1024, single=False) == (1, 16)
    assert grid(256, 2048, 1024, own=False) == grid(256, 2048, 1024, False, False) == (1, 2)
    assert grid(2048, 2304, 4) == grid(2048, 2304, 4, own=False)  # fastnn's own sums


@settings(max_examples=300, deadline=None)
@given(
    m=SIDES,
    n=SIDES,
    k=st.integers(5, 10**5),
    dm=st.integers(0, 3000),
    dn=st.integers(0, 3000),
    single=st.booleans(),
)
def test_own_gemm_tiles_grow_with_the_product(m, n, k, dm, dn, single):
    def count(m, n, k):
        rows, cols = blas.gemm_grid(m, n, k, small_mnk=0, single=single, own=True)
        return rows, cols, rows * cols

    rows, cols, tiles = count(m, n, k)
    assert tiles <= blas.GEMM_OWN_MAX_TILES
    assert rows == 1 or n < 2 * cols * blas.GEMM_OWN_MIN_COLS  # columns used up first
    # never fewer than the threads' rule's (up to the cap)
    assert tiles >= min(_count(m, n, k), blas.GEMM_OWN_MAX_TILES)
    assert count(m + dm, n, k)[2] >= tiles and count(m, n + dn, k)[2] >= tiles


@pytest.mark.parametrize("tiles", [1, 2, 4, 8, 16, 32, 64, 1024])
def test_claims_take_every_tile_once_and_not_neighbours_in_a_row(tiles):
    """On several threads the t-th claim takes tile gemm_claim(t): every tile once, and
    from 8 tiles two successive claims (tiles running side by side) never neighbours, whose shared
    edge would put both threads on the same cache lines of an unaligned output. The
    Cython kernels and Numba's carry the same order."""
    order = [blas.gemm_claim(t, tiles) for t in range(tiles)]
    assert sorted(order) == list(range(tiles))
    assert all(abs(x - y) > 1 for x, y in zip(order, order[1:])) or tiles <= 4
    from fastnn._kernels import dense_cython

    assert [dense_cython._gemm_claim(t, tiles) for t in range(tiles)] == order
    common = pytest.importorskip("fastnn._kernels._numba_common")
    assert [common.gemm_tile_claim(t, tiles) for t in range(tiles)] == order


def test_reference_makes_one_call_per_tile_over_the_whole_k(monkeypatch):
    """The inner dimension is never split: each tile is one BLAS call with k whole."""
    calls = []
    real = blas.gemm_call

    def spy(trans_a, trans_b, m, n, k, *rest):
        calls.append((m, n, k))
        return real(trans_a, trans_b, m, n, k, *rest)

    monkeypatch.setattr(blas, "gemm_call", spy)
    a, b = np.ones((256, 1024), np.float32), np.ones((1024, 2048), np.float32)
    out = blas.gemm(a, b, np.empty((256, 2048), np.float32))
    tiles = blas.gemm_blocks(256, 2048, 1024, dtype=np.float32)
    assert calls == [(r1 - r0, c1 - c0, 1024) for r0, r1, c0, c1 in tiles]
    assert (out == 1024).all()


def test_cython_carries_the_same_rule():
    from fastnn._kernels import dense_cython

    sides = [0, 1, 100, 255, 256, 257, 511, 600, 1024, 1100, 2049, 4100, 70000]
    for m in sides:
        for n in sides:
            for k in (1, 4, 5, 300, 784, 5000, 10**6):
                assert dense_cython._gemm_grid(m, n, k) == blas.gemm_grid(m, n, k), (m, n, k)
                for own in (False, True):  # with and without the own GEMM
                    for single in (False, True):
                        want = blas.gemm_grid(m, n, k, single=single, own=own)
                        got = dense_cython._gemm_grid(m, n, k, single=single, own=own)
                        assert got == want, (m, n, k, own, single)
    # the small-matrix cut, whatever this host's BLAS
    sides = [1, 16, 17, 64, 100, 128, 256, 300, 1000]
    for small in (0, 50_000, SMALL):
        for trans in [(False, False), (True, False), (False, True), (True, True)]:
            for m in sides:
                for n in sides:
                    for k in (4, 5, 31, 32, 64, 128, 200, 256, 257):
                        for single in (False, True):
                            want = blas.gemm_grid(m, n, k, *trans, small, single)
                            got = dense_cython._gemm_grid(m, n, k, *trans, small, single)
                            assert got == want, (m, n, k, trans, small, single)
                            want = blas.gemm_copies_b(m, n, k, *trans, small, single)
                            got = dense_cython._gemm_copies_b(m, n, k, *trans, small, single)
                            assert got == want, (m, n, k, trans, small, single)
    assert dense_cython._gemm_grid(64, 128, 128) == blas.gemm_grid(64, 128, 128)  # restored


def test_numba_compiles_the_same_rule():
    common = pytest.importorskip("fastnn._kernels._numba_common")
    for small in (0, SMALL):
        for trans in [(False, False), (True, False), (False, True)]:
            for m, n, k in [
                (64, 128, 128),
                (128, 256, 256),
                (100, 64, 200),
                (784, 256, 128),
                (64, 128, 256),
                (64, 64, 64),
            ]:
                for single in (False, True):
                    want = blas.gemm_grid(m, n, k, *trans, small, single)
                    got = common.gemm_tile_grid(m, n, k, *trans, small, single)
                    assert got == want, (m, n, k, single)
                    want = blas.gemm_copies_b(m, n, k, *trans, small, single)
                    got = common.gemm_copy_rule(m, n, k, *trans, small, single)
                    assert got == want, (m, n, k, single)
    for m, n, k in [(128, 256, 784), (256, 2048, 2048), (8192, 128, 4096), (64, 10**5, 8)]:
        for own in (False, True):  # the own GEMM's rule
            for single in (False, True):
                want = blas.gemm_grid(m, n, k, small_mnk=0, single=single, own=own)
                got = common.gemm_tile_grid(m, n, k, False, False, 0, single, own)
                assert got == want, (m, n, k, own, single)


THREAD_COUNTS = [1, 2, 3, 16, 64]


def _product_by(backend, a, b, out, trans_a, trans_b, n_threads):
    """out = op(a) @ op(b) through one backend's gemm on n_threads threads."""
    if backend == "numpy":
        blas.gemm(a, b, out, trans_a, trans_b)  # the reference has no threads
    elif backend == "cython":
        from fastnn._kernels import dense_cython

        dense_cython._gemm_threads(a, b, out, trans_a, trans_b, n_threads)
    else:
        from fastnn._kernels._numba_common import gemm_threads

        before = numba.get_num_threads()
        numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
        chunk = numba.set_parallel_chunksize(1)
        try:
            gemm_threads(a, b, out, trans_a, trans_b, n_threads)
        finally:
            numba.set_parallel_chunksize(chunk)
            numba.set_num_threads(before)


# Inner dimensions of 1 to GEMM_SMALL_K (docs/spec.md §10): no BLAS call, every backend
# sums each element in the order p = 0 .. k - 1. Config A's two such products, a k = 1
# one with a ragged width, and one long enough to be cut in tiles.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "m, n, k, trans_a, trans_b",
    [
        (64, 128, 2, False, False),  # z1 = x @ W1 on 2 features
        (64, 128, 3, False, True),  # da1 = dz2 @ W2^T below 3 outputs
        (2, 300, 4, True, False),  # a's columns strided
        (33, 517, 1, True, True),  # wider than the Cython panel (256 columns)
        (2048, 2304, 4, False, True),  # 2 m n k > 2**25: cut in 2 tiles
    ],
)
def test_short_inner_dimensions_give_the_same_bits_everywhere(m, n, k, trans_a, trans_b, dtype):
    rng = np.random.default_rng(m * n + k)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    a.flat[::7] = 0.0  # exact zeros and their signs
    b.flat[::5] = -0.0
    a.flat[3], b.flat[2] = np.inf, np.nan
    want = blas.gemm(a, b, np.empty((m, n), dtype), trans_a, trans_b)
    for backend in BACKENDS:
        for n_threads in (1, 2, 3):
            out = np.full((m, n), 7.0, dtype)
            _product_by(backend, a, b, out, trans_a, trans_b, n_threads)
            # bits, and NaN where the reference has NaN: which NaN an addition of two
            # returns is the compiler's choice (docs/spec.md §11)
            assert_exact(out, want, err_msg=f"{backend} {n_threads}")


# The transposes the kernels use: forward x @ w, dW = x.T @ dz, dx = dz @ w.T; sides
# that are not multiples of the tiles (shorter last ones) among them.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "m, n, k, trans_a, trans_b",
    [
        (256, 2050, 1030, False, False),
        (1100, 700, 400, True, False),
        (300, 1800, 1000, False, True),
        # tiles for OpenBLAS's small-matrix kernels (on a host whose BLAS has them)
        (64, 128, 128, False, False),  # digits' layer 2: 2 tiles
        (784, 256, 128, True, False),  # config B's dW1: 32
        (128, 128, 64, True, True),
        (64, 128, 128, False, True),  # digits' dx2 = dz W2^T: 8 tiles in float64
        (128, 256, 10, False, True),  # config B's dx3: on b's transposed copy in float32
        (48, 100, 30, False, True),  # the copy's edges (sides not multiples of 16)
        # 2**26 flops: the copy's tiles (float32) and the 1200-output tiles (float64)
        # claimed by several threads
        (2048, 64, 256, False, True),
    ],
)
def test_many_tiles_give_the_same_bits_on_any_thread_count(m, n, k, trans_a, trans_b, dtype):
    # (the first three are cut in 2 by the threads' rule, whose 16 tiles start at 2**35
    # flops, too long for a unit test; on fastnn's own GEMM in 4 to 16)
    if 2 * m * n * k >= blas.GEMM_SPLIT_FLOPS:
        assert _count(m, n, k) >= 2
    rng = np.random.default_rng(m + n)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    want = blas.gemm(a, b, np.empty((m, n), dtype), trans_a, trans_b)
    np.testing.assert_allclose(
        want, (a.T if trans_a else a) @ (b.T if trans_b else b), rtol=1e-3, atol=1e-3
    )
    for backend in BACKENDS:
        for n_threads in THREAD_COUNTS:
            out = np.full((m, n), np.nan, dtype)
            _product_by(backend, a, b, out, trans_a, trans_b, n_threads)
            np.testing.assert_array_equal(out, want, err_msg=f"{backend} {n_threads}")


def _shared_calls(dtype):
    """How many calls of fastnn's own GEMM on ``dtype`` have read a shared op(a) so far
    in this process (None where the own GEMM does not run)."""
    if not blas.GEMM_OWN:
        return None
    from fastnn._kernels import gemm_cython

    return gemm_cython.shared_calls(np.dtype(dtype).itemsize)


@pytest.mark.skipif(not blas.GEMM_OWN, reason="fastnn's own GEMM does not run here")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
def test_column_tiles_read_one_shared_pack(backend, dtype, trans_a):
    """Every backend packs op(a) once for a product cut into one row of column tiles,
    and every tile reads that pack, on one thread or several: the bits are the same
    either way, so only this count sees a backend that stopped sharing."""
    m, n, k = 128, 2048, 2048  # 2**30 flops: 16 column tiles of 128
    assert blas.gemm_grid(m, n, k, trans_a, single=dtype == "float32") == (1, 16)
    rng = np.random.default_rng(5)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    want = blas.gemm(a, b, np.empty((m, n), dtype), trans_a, False)
    for n_threads in (1, 2):
        out = np.full((m, n), np.nan, dtype)
        before = _shared_calls(dtype)
        _product_by(backend, a, b, out, trans_a, False, n_threads)
        assert _shared_calls(dtype) - before == 16, f"{n_threads} threads"
        np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("backend", ["numba", "cython"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "m, n_in, n_out",
    [
        (130, 300, 600),
        (512, 80, 600),
        (16, 20, 1),
        (256, 700, 100),
        (64, 128, 128),  # dx = dz W^T in tiles for the small-matrix kernels
        (1024, 2048, 2048),
    ],
)
def test_dense_kernels_make_the_reference_blocks(backend, dtype, m, n_in, n_out):
    """The backends' products are the reference's tiles, bit for bit (float32 products
    computed whole differ from the tiles, so this sees a wrong tiling). The last
    shape's forward product (2**33 flop) is cut in 64."""
    if m * n_in * n_out > 2**30 and dtype == "float64":
        pytest.skip("the 64-tile shape once is enough (its tiling is the same in float32)")
    raw = fastnn.backend(backend)._raw
    rng = np.random.default_rng(m + n_out)
    x = rng.standard_normal((m, n_in)).astype(dtype)
    w = rng.standard_normal((n_in, n_out)).astype(dtype)
    b = np.zeros(n_out, dtype)
    dz = rng.standard_normal((m, n_out)).astype(dtype)
    with threadpool_limits(1, user_api="blas"):
        for mod in (ref_dense, raw):
            z = np.empty((m, n_out), dtype)
            mod.dense_forward(x, w, b, 0, 0.0, z, z)  # identity: z = x @ w
            dw, db = np.empty((n_in, n_out), dtype), np.empty(n_out, dtype)
            mod.dense_backward(x, z, z, dz.copy(), 0, 0.0, dz.copy(), dw, db)
            dx = np.empty((m, n_in), dtype)
            mod.dense_input_gradient(dz, w, dx)
            if mod is ref_dense:
                want = z, dw, dx
    for got, ref in zip((z, dw, dx), want):
        np.testing.assert_array_equal(got, ref)


def _fit(
    backend,
    dtype,
    sizes,
    n_threads,
    *,
    epoch_kernel=True,
    batch=128,
    n=256,
    epochs=2,
    monkeypatch=None,
):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((n, sizes[0]))
    y = rng.integers(0, sizes[-1], n)
    net = fastnn.MLP(
        sizes,
        "relu",
        loss="cross_entropy",
        dtype=dtype,
        backend=backend,
        random_state=2,
        n_threads=n_threads,
    )
    opt = fastnn.Adam(lr=1e-3, clip_norm=1.0)
    Xc, yc = net.check_data(X, y)
    seen = []
    kernel = net.kernels._raw.train_epoch

    def spy(*args):
        seen.append((_n_threads_of(args), _scipy_blas_threads()))
        return kernel(*args)

    monkeypatch.setattr(net.kernels._raw, "train_epoch", spy)
    for _ in range(epochs):
        net.train_epoch(Xc, yc, opt, batch, on_step=None if epoch_kernel else (lambda j, loss: 0))
    monkeypatch.undo()
    return net, opt, seen


# Products cut along the columns (batch 256 of 1030 inputs to 1100 units: 8 tiles, a
# shorter last one; the output layer's products are single tiles), and along both sides
# (batch 1024 of 400 inputs to 700 units: the forward product 4 x 2 tiles, dW 1 x 4,
# transposed operand).
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes, batch", [([1030, 1100, 300, 7], 256), ([400, 700, 7], 1024)])
def test_epoch_is_the_same_on_one_and_two_threads(backend, dtype, sizes, batch, monkeypatch):
    with threadpool_limits(2, user_api="blas"):
        one, opt1, seen1 = _fit(
            backend, dtype, sizes, 1, batch=batch, n=2 * batch, monkeypatch=monkeypatch
        )
        two, opt2, seen2 = _fit(
            backend, dtype, sizes, 2, batch=batch, n=2 * batch, monkeypatch=monkeypatch
        )
        after = _scipy_blas_threads()
    np.testing.assert_array_equal(one.params, two.params)
    np.testing.assert_array_equal(opt1.state["m"], opt2.state["m"])
    assert opt1.last_grad_norm == opt2.last_grad_norm  # the norm's halves on 2 threads
    # the kernel got the model's count; SciPy's shared BLAS pool was left alone (the
    # products ran on fastnn's private single-threaded instance; the fallback holds the
    # shared pool at one thread meanwhile) and has its own count afterwards
    assert {s[0] for s in seen1} == {1} and {s[0] for s in seen2} == {2}
    during = [2] if _blas.info()["private"] else [1]
    assert all(s[1] == during for s in seen1 + seen2)
    assert after == [2]


# Batch 256 of 1030 inputs to 1100 units: the forward product (256 x 1100, k 1030) and
# dW (1030 x 1100, k 256) have 2 tiles each by the threads' rule, the second one
# shorter, and 8 column tiles where fastnn's own GEMM runs.
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_epoch_is_the_same_on_any_thread_count(backend, dtype, monkeypatch):
    assert _count(256, 1100, 1030) == 2 and _count(1030, 1100, 256) == 2
    tiles = 8 if blas.GEMM_OWN else 2
    assert len(blas.gemm_blocks(256, 1100, 1030, dtype=dtype)) == tiles
    assert len(blas.gemm_blocks(1030, 1100, 256, True, False, dtype)) == tiles
    runs, shared = [], []
    for t in THREAD_COUNTS:
        before = _shared_calls(dtype)
        runs.append(
            _fit(
                backend,
                dtype,
                [1030, 1100, 7],
                t,
                batch=256,
                n=512,
                epochs=1,
                monkeypatch=monkeypatch,
            )
        )
        shared.append(None if before is None else _shared_calls(dtype) - before)
    # 2 steps x the first layer's two products (z, dW) x their 8 tiles, on any count
    assert shared == [2 * 2 * 8 if blas.GEMM_OWN else None] * len(THREAD_COUNTS)
    first, opt1, _ = runs[0]
    for (net, opt, seen), t in zip(runs[1:], THREAD_COUNTS[1:]):
        np.testing.assert_array_equal(net.params, first.params, err_msg=f"{t} threads")
        np.testing.assert_array_equal(opt.state["v"], opt1.state["v"])
        assert opt.last_grad_norm == opt1.last_grad_norm
        assert {s[0] for s in seen} == {t}


@pytest.mark.parametrize("backend", BACKENDS)
def test_epoch_equals_the_step_path_with_one_blas_thread(backend, monkeypatch):
    """The step-by-step path (BLAS on one thread) makes the same tiles (8 per product
    of the first layer)."""
    sizes, kw = [1030, 1100, 7], {"batch": 256, "n": 512, "epochs": 1, "monkeypatch": monkeypatch}
    with threadpool_limits(1, user_api="blas"):
        step, _, _ = _fit(backend, "float32", sizes, 1, epoch_kernel=False, **kw)
    epoch, _, _ = _fit(backend, "float32", sizes, 2, **kw)
    np.testing.assert_array_equal(step.params, epoch.params)


@contextlib.contextmanager
def _thread_settings(*, cpus, blas, omp=None, numba_pool=64, cgroup=None, env=None):
    """Every input of ``_threads.resolve(None, ...)`` set, whatever the host's
    environment and what earlier tests left behind: the CPUs this process may use
    (affinity), its cgroup quota, the BLAS pool's size, OMP_NUM_THREADS (unset when
    None) and the other thread limits of the environment (``env``; all others unset),
    and Numba's pool size. Everything is restored on exit."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_threads, "available_cpus", lambda: cpus)
        mp.setattr(_threads, "cgroup_cpus", lambda: cgroup)
        mp.setattr(_threads, "blas_threads", lambda: blas)
        for name in _threads.ENV_LIMITS:
            mp.delenv(name, raising=False)
        if omp is not None:
            mp.setenv("OMP_NUM_THREADS", omp)
        for name, value in (env or {}).items():
            mp.setenv(name, value)
        mp.setattr(numba.config, "NUMBA_NUM_THREADS", numba_pool)
        yield


# (cpus, BLAS pool, OMP_NUM_THREADS, Numba pool, backend) -> resolve(None, backend)
RESOLVE_CASES = [
    ((2, 2, None, 64, "numba"), 2),
    ((1, 2, None, 64, "numba"), 1),  # the affinity
    ((4, 1, None, 64, "cython"), 1),  # a BLAS limit (joblib's loky, Dask workers)
    ((4, 3, None, 64, "numpy"), 3),
    ((4, 4, "1", 64, "cython"), 1),  # OMP_NUM_THREADS
    ((4, 4, "3,2", 64, "cython"), 3),  # its first entry (nested levels)
    ((4, 4, "0", 64, "cython"), 4),  # not a positive int: no cap
    ((4, 4, "many", 64, "cython"), 4),
    ((4, 4, None, 2, "numba"), 2),  # Numba's pool size ...
    ((4, 4, None, 2, "cython"), 4),  # ... only for Numba
]


@pytest.mark.parametrize(
    "settings, expected", RESOLVE_CASES, ids=["-".join(map(str, c)) for c, _ in RESOLVE_CASES]
)
def test_default_thread_count_is_the_smallest_limit(settings, expected):
    cpus, blas, omp, pool, backend = settings
    with _thread_settings(cpus=cpus, blas=blas, omp=omp, numba_pool=pool):
        assert _threads.resolve(None, backend) == expected
        assert _threads.resolve(3, backend) == 3  # a count given is used as it is


def test_default_is_every_core_when_nothing_limits_it():
    with _thread_settings(cpus=64, blas=64):
        assert _threads.resolve(None, "cython") == 64


@pytest.mark.parametrize("name", _threads.ENV_LIMITS)
def test_each_environment_limit_caps_the_default(name):
    with _thread_settings(cpus=8, blas=8, env={name: "3"}):
        assert _threads.resolve(None, "cython") == 3
    with _thread_settings(cpus=8, blas=8, env={name: "5", "OMP_THREAD_LIMIT": "4"}):
        assert _threads.resolve(None, "cython") == 4  # the smallest wins


def test_cgroup_quota_caps_the_default():
    with _thread_settings(cpus=8, blas=8, cgroup=3):
        assert _threads.resolve(None, "cython") == 3
    with _thread_settings(cpus=2, blas=8, cgroup=3):
        assert _threads.resolve(None, "cython") == 2


def test_affinity_is_read_from_the_os(monkeypatch):
    monkeypatch.setattr(_threads.os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert _threads.available_cpus() == 3

    def no_affinity(pid):
        raise OSError("not here")

    monkeypatch.setattr(_threads.os, "sched_getaffinity", no_affinity, raising=False)
    monkeypatch.setattr(_threads.os, "cpu_count", lambda: 6)
    assert _threads.available_cpus() == 6


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    "own, parent, expected",
    [
        ("250000 100000\n", None, 3),  # 2.5 CPUs: rounded up
        ("max 100000\n", None, None),  # no quota
        ("max 100000\n", "100000 100000\n", 1),  # a parent's quota applies
        ("400000 100000\n", "200000 50000\n", 4),  # the smallest
        ("20000 100000\n", None, 1),  # a fifth of a CPU: still one thread
        ("garbage\n", None, None),
    ],
)
def test_cgroup_v2_quota(tmp_path, own, parent, expected):
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/user.slice/job\n")
    _write(tmp_path / "cg" / "user.slice" / "job" / "cpu.max", own)
    if parent is not None:
        _write(tmp_path / "cg" / "user.slice" / "cpu.max", parent)
    assert _threads.cgroup_cpus(str(tmp_path / "cg"), str(proc)) == expected


@pytest.mark.parametrize(
    "quota, period, expected",
    [("-1", "100000", None), ("150000", "100000", 2), ("100000", "100000", 1)],
)
@pytest.mark.parametrize("mount", ["cpu", "cpu,cpuacct"])
def test_cgroup_v1_quota(tmp_path, mount, quota, period, expected):
    proc = tmp_path / "proc-cgroup"
    proc.write_text("4:memory:/x\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    base = tmp_path / "cg" / mount / "docker" / "abc"
    _write(base / "cpu.cfs_quota_us", quota + "\n")
    _write(base / "cpu.cfs_period_us", period + "\n")
    assert _threads.cgroup_cpus(str(tmp_path / "cg"), str(proc)) == expected


def test_no_cgroup_information_means_no_cap(tmp_path):
    assert _threads.cgroup_cpus(str(tmp_path), str(tmp_path / "missing")) is None
    proc = tmp_path / "proc-cgroup"
    proc.write_text("0::/\n")
    assert _threads.cgroup_cpus(str(tmp_path), str(proc)) is None


def test_default_respects_the_blas_limit_and_the_affinity(monkeypatch):
    """n_threads=None inside a worker limited to one thread (joblib's loky and Dask do
    this through threadpoolctl or OPENBLAS_NUM_THREADS) runs on one thread, and on two
    where everything allows two; the kernel gets that count."""
    for limit in (1, 2):
        with _thread_settings(cpus=2, blas=limit):
            _, _, seen = _fit(
                "cython", "float32", [20, 30, 3], None, epochs=1, monkeypatch=monkeypatch
            )
        assert seen and {s[0] for s in seen} == {limit}


def test_numba_thread_count_is_given_back(monkeypatch):
    before = numba.get_num_threads()
    _fit(
        "numba",
        "float32",
        [520, 600, 300, 7],
        min(2, numba.config.NUMBA_NUM_THREADS),
        epochs=1,
        monkeypatch=monkeypatch,
    )
    assert numba.get_num_threads() == before


def test_numba_small_shapes_run_on_one_thread(monkeypatch):
    """An epoch without a product of GEMM_SPLIT_FLOPS or an update segment of
    UPDATE_SPLIT values has no parallel loop: with n_threads=2 it runs on one thread,
    Numba's thread count and chunk size never set (config A's setting them cost ~5 us a
    call), the bits those of one thread."""
    from fastnn._kernels import training_numba

    calls = []
    monkeypatch.setattr(numba, "set_num_threads", lambda n: calls.append(n))
    monkeypatch.setattr(numba, "set_parallel_chunksize", lambda n: calls.append(n) or 0)
    two, _, seen = _fit("numba", "float32", [2, 128, 3], 2, epochs=1, monkeypatch=monkeypatch)
    assert calls == [] and {s[0] for s in seen} == {2}
    one, _, _ = _fit("numba", "float32", [2, 128, 3], 1, epochs=1, monkeypatch=monkeypatch)
    np.testing.assert_array_equal(one.params, two.params)
    seg = np.array([[0, 10, 1]], np.int64)
    small, wide = np.array([2, 128, 3], np.int64), np.array([1030, 1100, 7], np.int64)
    assert not training_numba._parallel_work(small, 64, seg)
    assert training_numba._parallel_work(wide, 256, seg)  # 2 tiles (the test above)
    big_segment = np.array([[0, training_numba.UPDATE_SPLIT, 1]], np.int64)
    assert training_numba._parallel_work(small, 64, big_segment)


@pytest.mark.parametrize("bad, error", [(0, ValueError), (True, TypeError), (1.5, TypeError)])
def test_n_threads_is_checked(bad, error):
    with pytest.raises(error, match="n_threads"):
        fastnn.MLP([2, 3], n_threads=bad)
    net = fastnn.MLP([2, 3], n_threads=2)
    assert net.copy().n_threads == 2


def test_estimator_passes_n_threads_to_the_kernel(monkeypatch):
    pytest.importorskip("sklearn")
    seen = []
    est = fastnn.MLPClassifier(
        hidden_layer_sizes=(8,), max_iter=2, n_threads=2, backend="cython", random_state=0
    )
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 4)), rng.integers(0, 2, 64)
    raw = fastnn.backend("cython")._raw
    kernel = raw.train_epoch
    monkeypatch.setattr(
        raw,
        "train_epoch",
        lambda *a: (seen.append((_n_threads_of(a), _scipy_blas_threads())), kernel(*a)),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter=2 does not converge
        est.fit(X, y)
    # the process's BLAS pools are left as they were (the fallback holds them at one)
    during = _scipy_blas_threads() if _blas.info()["private"] else [1]
    assert seen and {s[0] for s in seen} == {2} and all(s[1] == during for s in seen)


_NUMBA_64 = """
import numba, numpy as np
from fastnn.reference import blas
from fastnn._kernels._numba_common import gemm_threads
assert numba.config.NUMBA_NUM_THREADS == 64
rng = np.random.default_rng(0)
for dtype in ("float32", "float64"):
    a = rng.standard_normal((1030, 256)).astype(dtype)  # dW = x.T @ dz: 2 tiles, 16 on
    b = rng.standard_normal((1030, 2050)).astype(dtype)  # the own GEMM
    want = blas.gemm(a, b, np.empty((256, 2050), dtype), True, False)
    assert len(blas.gemm_blocks(256, 2050, 1030, True, False, dtype)) >= 2
    numba.set_parallel_chunksize(1)
    for t in (3, 16, 64):
        numba.set_num_threads(t)
        out = np.full((256, 2050), np.nan, dtype)
        gemm_threads(a, b, out, True, False, t)
        assert np.array_equal(out, want), (dtype, t)
print("same bits")
"""


def test_numba_tiles_on_16_and_64_real_threads():
    """Numba's pool is as large as NUMBA_NUM_THREADS (2 on a 2-core machine, which caps
    the counts above): a child with a pool of 64 runs the tiles on 16 and 64 threads."""
    src = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
    env = dict(os.environ, NUMBA_NUM_THREADS="64", PYTHONPATH=src)
    proc = subprocess.run(
        [sys.executable, "-c", _NUMBA_64], capture_output=True, text=True, timeout=600, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "same bits" in proc.stdout
