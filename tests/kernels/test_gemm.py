"""fastnn's own GEMM (_kernels/fastnn_gemm.h, reached through fastnn._blas), float32
and float64.

Where the CPU has AVX-512 and the Cython kernels are built, every product of every
backend calls it in place of the BLAS's ``sgemm_`` and ``dgemm_``; it takes the larger calls
(which the BLAS packs) and hands the others to the BLAS. These tests check its results
against an exact product (the dot-product bound of any BLAS) and, output by output,
against an exact model of its FMA chains; that output tiles give the whole call's bits,
that what it does not take is the BLAS's own result, and that threads calling it at
once get the bits of one thread (docs/spec.md §10).
"""

import importlib.util
import os
import subprocess
import sys
import threading
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastnn import _blas

OWN = _blas.info()["gemm"] == "fastnn"
needs_own = pytest.mark.skipif(
    not OWN, reason="fastnn's own GEMM needs AVX-512 and the built Cython kernels"
)
DTYPES = [np.float32, np.float64]
KC = {np.float32: 512, np.float64: 256}  # fastnn_gemm.h's KC blocks of k


def _operands(rng, m, n, k, ta, tb, pad=0, dtype=np.float32):
    """a, b for out (m, n) = op(a) @ op(b), as views with ``pad`` more columns (rows of
    ``ld`` > their width: a non-contiguous layout)."""
    shape_a = (k, m) if ta else (m, k)
    shape_b = (n, k) if tb else (k, n)
    a = rng.standard_normal((shape_a[0], shape_a[1] + pad)).astype(dtype)
    b = rng.standard_normal((shape_b[0], shape_b[1] + pad)).astype(dtype)
    return a[:, : shape_a[1]], b[:, : shape_b[1]]


def _own(dtype):
    """The ?gemm_ fastnn's kernels call for this dtype (the own GEMM here)."""
    return _blas._instance().gemm_for(dtype)


def _blas_only(dtype):
    """The BLAS's own ?gemm_ behind it."""
    return _blas._instance().gemm_for(dtype, blas_only=True)


def _bits(x):
    return x.view(np.uint32 if x.dtype == np.float32 else np.uint64)


def _call(fn, ta, tb, a, b, out, r0=0, r1=None, c0=0, c1=None, beta=0.0):
    """out[r0:r1, c0:c1] = op(a)[r0:r1] @ op(b)[:, c0:c1] + beta out[...] through ``fn``
    (a ?gemm_), row-major through column-major as fastnn._blas.gemm_call makes it."""
    r1 = out.shape[0] if r1 is None else r1
    c1 = out.shape[1] if c1 is None else c1
    k = a.shape[0] if ta else a.shape[1]
    size = out.itemsize
    lda, ldb, ldc = a.strides[0] // size, b.strides[0] // size, out.strides[0] // size
    a_off = r0 if ta else r0 * lda
    b_off = c0 * ldb if tb else c0
    _, args = _blas.gemm_arguments(
        ta, tb, r1 - r0, c1 - c0, k, a, a_off, lda, b, b_off, ldb, out, r0 * ldc + c0, ldc, beta
    )
    fn(*args)


def _takes(m, n, k):
    """Whether the own GEMM takes the row-major product out (m, n) of inner k."""
    from fastnn._kernels import gemm_cython

    return gemm_cython.takes(m, n, k)


def _exact(a, b, ta, tb):
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64.T if ta else a64) @ (b64.T if tb else b64)


def _assert_within_dot_bound(out, a, b, ta, tb):
    """|out - exact| <= (k + 1) u (|op(a)| @ |op(b)|): a sum of k products in the
    operands' precision, whatever its order, with or without FMA (exact: float64 on
    float32 operands, the exact products' float64 sum plus its own bound on float64)."""
    k = a.shape[0] if ta else a.shape[1]
    u = float(np.finfo(a.dtype).eps) / 2
    scale = _exact(np.abs(a), np.abs(b), ta, tb)
    exact_err = 0.0 if a.dtype == np.float32 else (k + 1) * 2.0**-53 * scale
    bound = (k + 1) * u * scale + exact_err
    err = np.abs(out.astype(np.float64) - _exact(a, b, ta, tb))
    assert np.all(err <= bound), float((err - bound).max())


@needs_own
@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 300),
    n=st.integers(1, 300),
    k=st.integers(1, 1100),
    ta=st.booleans(),
    tb=st.booleans(),
    pad=st.sampled_from([0, 3]),
    dtype=st.sampled_from(DTYPES),
)
def test_products_are_within_the_dot_product_bound(m, n, k, ta, tb, pad, dtype):
    a, b = _operands(np.random.default_rng(m * n + k), m, n, k, ta, tb, pad, dtype)
    out = np.full((m, n), np.nan, dtype)
    size = out.itemsize
    _blas.gemm_call(
        ta, tb, m, n, k, a, 0, a.strides[0] // size, b, 0, b.strides[0] // size, out, 0, n
    )
    _assert_within_dot_bound(out, a, b, ta, tb)


@needs_own
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "m, n, k, ta, tb",
    [
        (200, 300, 1100, False, False),  # k over three KC blocks of 512 (five of 256)
        (97, 90, 700, True, False),
        (130, 77, 640, False, True),
        (64, 256, 1024, True, True),
        (5000, 300, 10, False, True),  # k of 10: 2 x 2 tiles of 2500 x 150
    ],
)
def test_output_tiles_give_the_whole_calls_bits(m, n, k, ta, tb, dtype):
    """An element is one FMA chain over k, whatever the tile it lies in: tiles at
    uneven edges (partial row and column panels) give the whole call's bits, as long
    as the GEMM takes each tile (at least 32 output columns, over 10^6 m n k)."""
    a, b = _operands(np.random.default_rng(1), m, n, k, ta, tb, 5, dtype)
    gemm = _own(dtype)
    whole = np.full((m, n), np.nan, dtype)
    tiled = np.full((m, n), np.nan, dtype)
    _call(gemm, ta, tb, a, b, whole)
    rows = [0, m // 2 + 3, m]
    cols = [0, n // 2 + 5, n]
    assert all(
        _takes(r1 - r0, c1 - c0, k)
        for r0, r1 in zip(rows[:-1], rows[1:])
        for c0, c1 in zip(cols[:-1], cols[1:])
    )
    for r0, r1 in zip(rows[:-1], rows[1:]):
        for c0, c1 in zip(cols[:-1], cols[1:]):
            _call(gemm, ta, tb, a, b, tiled, r0, r1, c0, c1)
    np.testing.assert_array_equal(_bits(whole), _bits(tiled))
    _assert_within_dot_bound(whole, a, b, ta, tb)


@needs_own
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "m, n, k",
    [
        (128, 10, 256),  # 10 output columns: 10 rows of the column-major call
        (64, 128, 64),  # at most 10^6 m n k: the BLAS's small-matrix kernels
        (1, 1, 1),
    ],
)
def test_calls_it_does_not_take_are_the_blas_calls(m, n, k, dtype):
    if _takes(m, n, k):
        pytest.skip("this BLAS has no small-matrix kernels: the own GEMM takes the call")
    for ta in (False, True):
        for tb in (False, True):
            a, b = _operands(np.random.default_rng(2), m, n, k, ta, tb, dtype=dtype)
            own, blas = (np.full((m, n), np.nan, dtype) for _ in range(2))
            _call(_own(dtype), ta, tb, a, b, own)
            _call(_blas_only(dtype), ta, tb, a, b, blas)
            np.testing.assert_array_equal(_bits(own), _bits(blas))


@needs_own
@pytest.mark.parametrize("dtype", DTYPES)
def test_beta_other_than_zero_goes_to_the_blas(dtype):
    """fastnn passes beta = 0 only; another beta is still a correct ?gemm_ call."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((256, 300)).astype(dtype)
    b = rng.standard_normal((300, 256)).astype(dtype)
    c0 = rng.standard_normal((256, 256)).astype(dtype)
    outs = []
    for fn in (_own(dtype), _blas_only(dtype)):
        c = c0.copy()
        _call(fn, False, False, a, b, c, beta=0.5)
        outs.append(c)
    np.testing.assert_array_equal(_bits(outs[0]), _bits(outs[1]))
    # the bound on op(a) op(b) + 0.5 c0 (0.5 c0 exact, one more rounding; float64's
    # exact value in float64 has a bound of its own as large)
    err = np.abs(outs[0].astype(np.float64) - (_exact(a, b, False, False) + 0.5 * c0))
    u = float(np.finfo(dtype).eps) / 2
    scale = _exact(np.abs(a), np.abs(b), False, False) + 0.5 * np.abs(c0)
    assert np.all(err <= (1 if dtype == np.float32 else 2) * 302 * u * scale)


@needs_own
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf_reach_the_outputs_they_touch(dtype):
    """No operand is skipped: a NaN or an infinity reaches exactly the outputs it
    touches in the exact product, on full and partial row and column panels."""
    rng = np.random.default_rng(4)
    m, n, k = 70, 45, 600
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    a[3, 17] = np.nan
    a[66, 5] = np.inf
    b[9, 44] = -np.inf
    out = np.empty((m, n), dtype)
    _blas.gemm_call(False, False, m, n, k, a, 0, k, b, 0, n, out, 0, n)
    with np.errstate(invalid="ignore", over="ignore"):
        exact = _exact(a, b, False, False)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(exact))
    np.testing.assert_array_equal(np.isposinf(out), np.isposinf(exact))
    np.testing.assert_array_equal(np.isneginf(out), np.isneginf(exact))


@needs_own
def test_threads_calling_at_once_get_one_threads_bits():
    """Each thread packs into buffers of its own: products made by 4 threads at once,
    each its own shape and dtype (so its buffers grow while the others run), are those
    of one thread."""
    shapes = [(256, 300, 700), (64, 2048, 300), (500, 40, 1500), (128, 256, 784)]
    rng = np.random.default_rng(5)
    cases = []
    for i, (m, n, k) in enumerate(shapes):
        a, b = _operands(rng, m, n, k, False, True, dtype=DTYPES[i % 2])
        want = np.empty((m, n), a.dtype)
        _call(_own(a.dtype), False, True, a, b, want)
        cases.append((a, b, want))

    def product(a, b, want):
        out = np.empty_like(want)
        _call(_own(a.dtype), False, True, a, b, out)
        return out

    assert _each_in_a_thread(cases, product, 20) == []


def _each_in_a_thread(cases, product, rounds):
    """Runs ``product(a, b)`` ``rounds`` times for each (a, b, want) of ``cases``, each
    case in a thread of its own, all at once; the shapes whose result was ever not
    ``want``'s bits."""
    failures = []

    def run(case):
        a, b, want = case
        for _ in range(rounds):
            if not np.array_equal(_bits(product(a, b, want)), _bits(want)):
                failures.append(want.shape)
                return

    threads = [threading.Thread(target=run, args=(c,)) for c in cases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failures


def _column_tiles(a, b, out, ta, tb, cols, share, then=None):
    """out = op(a) @ op(b) in ``cols`` column tiles (fastnn.reference.blas.gemm_edge's),
    op(a) packed once for them all first when ``share`` (and ``then()`` called after
    the packing); whether it was."""
    from fastnn.reference.blas import gemm_edge, gemm_narrowest

    m, n = out.shape
    k = a.shape[0] if ta else a.shape[1]
    lda, ldc = a.strides[0] // out.itemsize, out.strides[0] // out.itemsize
    shared = share and _blas.gemm_share(ta, m, n, k, a, lda, out, ldc, gemm_narrowest(n, cols))
    if then is not None:
        then()
    try:
        for j in range(cols):
            c0, c1 = gemm_edge(n, cols, j), gemm_edge(n, cols, j + 1)
            _call(_own(out.dtype), ta, tb, a, b, out, 0, m, c0, c1)
    finally:
        if shared:
            _blas.gemm_unshare(out.dtype)
    return shared


@needs_own
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "m, n, k, ta, tb, cols",
    [
        (256, 2050, 1030, False, False, 16),  # k over 3 (5) KC blocks, a last wider tile
        (300, 1800, 700, False, True, 8),  # 300 rows: a partial 14-column micro-panel
        (1100, 700, 400, True, False, 8),  # op(a) transposed
        (97, 640, 600, True, True, 4),
        (4200, 200, 300, False, False, 2),  # more rows than one NC block of the call
    ],
)
def test_shared_packing_gives_the_whole_calls_bits(m, n, k, ta, tb, cols, dtype):
    """A product's column tiles reading its op(a) packed once (fnn_own_share) give the
    whole call's bits, as tiles packing it themselves do. That they read the pack is
    shown by changing a once it is packed: they still give the bits of a as packed."""
    a, b = _operands(np.random.default_rng(m + n), m, n, k, ta, tb, 3, dtype)
    whole = np.full((m, n), np.nan, dtype)
    _call(_own(dtype), ta, tb, a, b, whole)
    tiled = np.full((m, n), np.nan, dtype)
    assert not _column_tiles(a, b, tiled, ta, tb, cols, False)
    np.testing.assert_array_equal(_bits(whole), _bits(tiled))
    tiled = np.full((m, n), np.nan, dtype)

    def change_a():
        a[...] = 1.0

    assert _column_tiles(a, b, tiled, ta, tb, cols, True, change_a)
    np.testing.assert_array_equal(_bits(whole), _bits(tiled))


@needs_own
@pytest.mark.parametrize("dtype", DTYPES)
def test_only_the_holders_tiles_read_the_shared_pack(dtype):
    """A call reads the shared op(a) only when it is a tile of the product that packed
    it: the same operand, and an output inside that product's. Shown by changing a
    after packing: the holder's tiles still see the packed values, any other call sees
    a as it is; one product holds a dtype's pack at a time, the other dtype's is free."""
    m, n, k = 256, 1024, 600
    rng = np.random.default_rng(8)
    a, b = _operands(rng, m, n, k, False, False, dtype=dtype)
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    new_a = rng.standard_normal(a.shape).astype(dtype)
    gemm = _own(dtype)
    old_out, new_out = np.empty((m, n), dtype), np.empty((m, n), dtype)
    _call(gemm, False, False, a, b, old_out)
    _call(gemm, False, False, new_a, b, new_out)
    out = np.full((m, n), np.nan, dtype)
    elsewhere = np.full((m, n), np.nan, dtype)
    other = np.float64 if dtype == np.float32 else np.float32
    a_other, out_other = a.astype(other), out.astype(other)
    assert _blas.gemm_share(False, m, n, k, a, k, out, n, 256)
    try:
        assert not _blas.gemm_share(False, m, n, k, a, k, out, n, 256)  # held
        assert _blas.gemm_share(False, m, n, k, a_other, k, out_other, n, 256)
        _blas.gemm_unshare(other)  # the other dtype's slot is its own
        a[...] = new_a
        _call(gemm, False, False, a, b, out, 0, m, 256, 512)  # a tile of the holder's
        _call(gemm, False, False, a, b, elsewhere, 0, m, 256, 512)  # another output
        _call(gemm, False, False, a[: m - 32], b, out, 0, m - 32, 0, 256)  # fewer rows
    finally:
        _blas.gemm_unshare(dtype)
    _call(gemm, False, False, a, b, out, 0, m, 512, 768)  # after the release
    bits = [_bits(x) for x in (out, elsewhere, old_out, new_out)]
    np.testing.assert_array_equal(bits[0][:, 256:512], bits[2][:, 256:512])
    np.testing.assert_array_equal(bits[1][:, 256:512], bits[3][:, 256:512])
    np.testing.assert_array_equal(bits[0][: m - 32, :256], bits[3][: m - 32, :256])
    np.testing.assert_array_equal(bits[0][:, 512:768], bits[3][:, 512:768])
    assert _blas.gemm_share(False, m, n, k, a, k, out, n, 256)  # free again
    _blas.gemm_unshare(dtype)


FORK_SCENARIO = """
import os, sys
import numpy as np
from fastnn import _blas

m, n, k = 256, 1024, 600
rng = np.random.default_rng(1)
dtypes = (np.float32, np.float64)
a = {d: rng.standard_normal((m, k)).astype(d) for d in dtypes}
b = {d: rng.standard_normal((k, n)).astype(d) for d in dtypes}
out = {d: np.zeros((m, n), d) for d in dtypes}
elsewhere = {d: np.zeros((m, n), d) for d in dtypes}


def tile(d, dst):  # the first 256 columns, a tile of the product that holds the pack
    _, args = _blas.gemm_arguments(False, False, m, 256, k, a[d], 0, k, b[d], 0, n, dst, 0, n)
    _blas._instance().gemm_for(d)(*args)


for d in dtypes:  # both slots held across the fork
    assert _blas.gemm_share(False, m, n, k, a[d], k, out[d], n, 256)
    a[d][...] = rng.standard_normal((m, k)).astype(d)
pid = os.fork()
if pid == 0:
    ok = True
    for d in dtypes:
        tile(d, out[d])  # the child's product at the same addresses: a as it is now
        tile(d, elsewhere[d])
        ok = ok and np.array_equal(out[d][:, :256], elsewhere[d][:, :256])
        ok = ok and _blas.gemm_share(False, m, n, k, a[d], k, out[d], n, 256)  # free
        _blas.gemm_unshare(d)
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
for d in dtypes:
    _blas.gemm_unshare(d)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@needs_own
def test_a_forked_child_starts_with_no_shared_pack():
    """A child forked while products hold the shared packs (their holder, a parent's
    thread, is not in the child to release them) finds both dtypes' slots free and
    nothing published: its own products at the same addresses read their operands as
    they are."""
    run = subprocess.run(
        [sys.executable, "-c", FORK_SCENARIO], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, (run.stdout, run.stderr)


@needs_own
@pytest.mark.parametrize("dtype", DTYPES)
def test_products_sharing_at_once_from_threads_get_one_threads_bits(dtype):
    """Products cut in column tiles from 4 threads at once: one holds the shared pack,
    the others' tiles pack for themselves, every result is the one-thread result."""
    from fastnn.reference import blas

    rng = np.random.default_rng(9)
    cases = []
    for m, n, k in [(256, 2048, 520), (128, 4096, 300), (300, 1024, 1100), (64, 8192, 256)]:
        a, b = _operands(rng, m, n, k, False, False, dtype=dtype)
        a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
        assert len(blas.gemm_blocks(m, n, k, dtype=dtype)) > 1
        cases.append((a, b, blas.gemm(a, b, np.empty((m, n), dtype))))

    def product(a, b, want):
        return blas.gemm(a, b, np.full_like(want, np.nan))

    assert _each_in_a_thread(cases, product, 10) == []


def _can_run_own() -> bool:
    """AVX-512 and the built module: where ``FASTNN_GEMM=auto`` runs the own GEMM
    (whatever this process's own FASTNN_GEMM)."""
    try:
        with open("/proc/cpuinfo") as f:
            avx512 = any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:
        return False
    return avx512 and importlib.util.find_spec("fastnn._kernels.gemm_cython") is not None


def test_fastnn_gemm_blas_turns_it_off_and_others_are_refused():
    code = "from fastnn import _blas; print(_blas.info()['gemm'])"
    got = {}
    for choice in ("blas", "auto", "mkl"):
        env = {**os.environ, "FASTNN_GEMM": choice}
        run = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
        got[choice] = (run.returncode, run.stdout.strip(), run.stderr)
    assert got["blas"][:2] == (0, "blas")
    assert got["auto"][:2] == (0, "fastnn" if _can_run_own() else "blas")
    assert got["mkl"][0] != 0
    assert "FASTNN_GEMM must be 'auto' or 'blas', got 'mkl'" in got["mkl"][2]


def _round_f32(x: Fraction) -> np.float32:
    """The float32 nearest to the exact x, ties to even (x within float32's range)."""
    f = np.float32(float(x))  # at most one float32 step off (double rounding)
    cands = [np.nextafter(f, np.float32(-np.inf)), f, np.nextafter(f, np.float32(np.inf))]

    def key(c):
        return (abs(Fraction(float(c)) - x), int(c.view(np.uint32)) & 1)

    return min(cands, key=key)


def _fma_chain_model(a_row, b_col, kc):
    """fastnn_gemm.h's value of one output: per block of kc terms, starting from 0, the
    fused multiply-adds acc = round(a_p b_p + acc) in p order in the operands'
    precision; the blocks' sums added in order, each addition rounded."""
    single = a_row.dtype == np.float32

    def fma(x, y, acc):
        exact = Fraction(float(x)) * Fraction(float(y)) + Fraction(float(acc))
        return _round_f32(exact) if single else np.float64(float(exact))  # correctly rounded

    out = None
    for p0 in range(0, len(a_row), kc):
        acc = a_row.dtype.type(0.0)
        for x, y in zip(a_row[p0 : p0 + kc], b_col[p0 : p0 + kc]):
            acc = fma(x, y, acc)
        out = acc if out is None else out + acc
    return out


@needs_own
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta, tb", [(False, False), (True, True)])
def test_each_output_is_the_documented_fma_chain(ta, tb, dtype):
    """The own GEMM ran, and summed as docs/spec.md §10 says: outputs of a full and a
    partial row panel, of full and narrower column panels, across three (float32) or five
    (float64) KC blocks, equal bit for bit an exact model of one FMA chain per KC block
    (512 terms for float32, 256 for float64; OpenBLAS blocks k otherwise and gives other
    bits on most of them)."""
    # column-major rows 33 (float32: a full panel of 32 then 1; float64: 2 of 16 then
    # 1); 75 columns (5 panels of 14, then one of 5)
    m, n, k = 75, 33, 1030
    a, b = _operands(np.random.default_rng(6), m, n, k, ta, tb, dtype=dtype)
    out = np.empty((m, n), dtype)
    _call(_own(dtype), ta, tb, a, b, out)
    A = a.T if ta else a
    B = b.T if tb else b
    for i, j in [(0, 0), (1, 31), (69, 32), (13, 14), (42, 27), (56, 5), (27, 32), (74, 32)]:
        # (row-major rows 70-74: the narrower column panel of the column-major call)
        assert out[i, j] == _fma_chain_model(A[i], B[:, j], KC[dtype]), (i, j)
