"""Row-major matrix products through fastnn's BLAS, the library the compiled kernels call.

NumPy's ``@`` links its own OpenBLAS build, threaded as its user set it; going through
:mod:`fastnn._blas` (a private, single-threaded OpenBLAS instance) makes the
reference run the very GEMM calls the Numba and Cython kernels run, so products agree
between backends bit for bit (docs/spec.md §10, rule 2 of §11), whatever thread calls
them and whatever BLAS thread limits are set.

Every product's output is cut into tiles by :func:`gemm_blocks`, a rule that looks at
the shape (and, for small products, the transposition, the dtype and the BLAS's
small-matrix kernels), never at threads, and each tile is one BLAS call with the whole
inner dimension (or, for an inner dimension of at most GEMM_SMALL_K, a sum in a fixed
order that every backend runs itself; a small float32 a @ b^T is made on a transposed
copy of b, :func:`gemm_copies_b`). The compiled kernels make the same calls, one after
the other on one thread or claimed by the threads of fastnn's pool on several, so the
bits never depend on the thread count (OpenBLAS's own threading, and even computing a
product whole instead of in tiles, changes float32 results).
"""

import numpy as np

from .._blas import gemm_call, gemm_share, gemm_unshare, own_gemm, small_gemm_mnk

# The tiling rule. Numba compiles gemm_grid and gemm_edge themselves, the Cython kernels
# carry a copy (blas_cython.pxd) that must stay equal to them (tests/test_threads.py).
#
# Why these numbers (docs/benchmarks/2026-12-02-tiles-scaling.md has the measurements,
# benchmarks/scaling.py --efficiency makes them; OpenBLAS 0.3, SkylakeX kernel): each
# tile is one BLAS call that packs its rows of op(a) and its columns of op(b) again, so
# cutting costs one-thread time: cut into 2, the products of configs B and D cost 0-9%
# more than one call each (3.5% and 4.5% of their step); 16 tiles of 256 x 128 cost
# 14-20%, 128 x 128 tiles 23-37%, 64 x 64 tiles 1.5-2.7x. A second core repays a cut in
# 2 many times over (on an idle 2-core machine B's step ran 1.36x faster on 2 threads
# with it, and 38% slower than that without), so:
#   from GEMM_SPLIT_FLOPS (2**25) a product is cut in 2, as fastnn's partition always
#   did; the count doubles each time the product doubles past 2 * GEMM_TILE_FLOPS
#   (2**31: 4 tiles from 2**33, 8 from 2**34, 16 from 2**35), so only products long
#   enough for many cores to repay the one-thread cost are cut finer.
# The longer side of the tile is halved first (columns on a tie), into parts of at
# least GEMM_MIN_ROWS rows or GEMM_MIN_COLS columns: tall tiles pack cheaper here (256 x
# 128 tiles cost 14-20% on one thread where 128 x 256 cost 28-31%), and a part's edges
# lie on multiples of GEMM_UNIT, which the BLAS micro-kernels' tile sizes divide.
GEMM_UNIT = 16
GEMM_MIN_ROWS = 256
GEMM_MIN_COLS = 128
GEMM_SPLIT_FLOPS = 2**25
GEMM_TILE_FLOPS = 2**31

# Where fastnn's own GEMM runs (fastnn._blas.own_gemm, _kernels/fastnn_gemm.h), a
# product cut into one row of column tiles packs its op(a) once for them all: the tiles
# then pack only their own columns of op(b), which no other tile reads. Cut that way,
# config C's products cost 0.99-1.03x their whole call in 16-32 tiles, against
# 1.05-1.19x when each tile packs op(a) again (docs/benchmarks/2026-12-06-shared-
# packing.md; float64 alike, 2026-12-06-float64-gemm.md), so a product with k >
# GEMM_SMALL_K is cut much finer there: its columns first, in parts of at least
# GEMM_OWN_MIN_COLS (two float32 or four float64 micro-panels of the GEMM), into a count
# that doubles each time the product doubles past 2 * GEMM_OWN_TILE_FLOPS (2**26: 16
# tiles from 2**30, config C's first product), at most GEMM_OWN_MAX_TILES (fastnn's pool
# runs 64 threads at most); rows only once the columns are used up.
GEMM_OWN = own_gemm()
GEMM_OWN_TILE_FLOPS = 2**26
GEMM_OWN_MIN_COLS = 64
GEMM_OWN_MAX_TILES = 64

# Products whose inner dimension k is this short are not BLAS calls (docs/spec.md §10):
# each element is summed in the order p = 0 .. k - 1 by every backend (gemm_small_k;
# fastnn_simd.h for the Cython kernels, _numba_common.py for Numba's). BLAS packs both
# operands for these few products per output and took 1.1-3x longer (A's products z1 =
# x W1, k = 2, and da1 = dz2 W2^T, k = 3, on Zen 5; benchmarks/small_products.py).
GEMM_SMALL_K = 4

# Cut for OpenBLAS's small-matrix kernels. OpenBLAS's SkylakeX, Cooperlake and
# SapphireRapids cores run a call whose M N K is at most GEMM_SMALL_MNK (100^3) on kernels
# that read the operands in place instead of packing them (kernel/x86_64/
# ?gemm_small_kernel_permit_skylakex.c), and a product just past that size took a third
# longer whole than as two such calls (a digits layer, 64 x 128 x 128: 20.3 against 13.5
# us in float32, 43 against 28 in float64), config B's dW of 784 x 256 x 128 14-17%
# longer in 2 packed calls than in 32 small ones (docs/benchmarks/
# 2026-12-05-small-tiles.md). So a product whose calls the small kernels take (out =
# a @ b^T has its own rule, below), with an
# inner dimension of GEMM_SMALL_K < k <= GEMM_SMALL_MAX_K and GEMM_SMALL_MNK < m n k <=
# GEMM_SMALL_MAX_MNK, is cut into tiles of at most GEMM_SMALL_MNK (few: halving). Past
# GEMM_SMALL_MAX_K the unpacked reads of float64 tiles ran slower than packed calls;
# GEMM_SMALL_MAX_MNK is the largest size measured (config D's 1024 x 256 x 256, 2-4%
# faster in 128 tiles): above it the threads' rule below applies. GEMM_SMALL_MNK is 0
# when fastnn's BLAS has no such kernels (other cores, another BLAS): there a cut only
# repacks (0-23% slower with OpenBLAS's Haswell core). The value is the host's BLAS's,
# the same for every backend in a process, so the bits still depend on the shape and
# that BLAS only, as every product's do (docs/spec.md §11).
GEMM_SMALL_MNK = small_gemm_mnk()
GEMM_SMALL_MAX_K = 256
GEMM_SMALL_MAX_MNK = 2**26

# out = a @ b^T: OpenBLAS's SkylakeX small kernels take such a call (transposed-A in
# Fortran's terms) only when its output has at most GEMM_TN_MAX_OUT values and its
# inner dimension at least GEMM_TN_MIN_K (sgemm_small_kernel_permit_skylakex.c); larger
# ones are packed. Cut into such tiles, float64 input gradients dx = dz W^T ran up to
# 37% faster, on every shape measured but one at k = 32 (even; config D's 1024 x 256 x
# 256 in 256 tiles 4% faster; a float64 digits step 253 -> 239 us). float32 ones ran
# 0.70x-1.65x the whole call's time by shape, and a float32 digits step no faster: they
# are not cut (docs/benchmarks/2026-12-05-tn-tiles.md).
GEMM_TN_MAX_OUT = 1200
GEMM_TN_MIN_K = 32

# A float32 out = a @ b^T whose b (n, k) has at most GEMM_COPY_MAX values is computed
# as a @ bt on a transposed copy bt (k, n) of b, with that product's own tiles: the
# small-matrix kernels take it (an untransposed call), and the copy costs less than the
# packing of the transposed-A call it replaces. A float32 digits input gradient dz W2^T
# (64 x 128 x 128) took 20.5 us whole, 16.8 copied and cut in 2, and a float32 digits
# fit 3.4% less (Cython); config B's dz W3^T (128 x 256 x 10) 9.9 -> 5.7 us
# (docs/benchmarks/2026-12-05-tn-tiles.md). The copy is a few values per output of the
# product, so it only pays for such small ones; float64 keeps its transposed-A tiles,
# which the copy did not beat. GEMM_COPY_MAX is also the size of the kernels' copy
# buffer (a thread's own, or the stack: nothing is allocated).
GEMM_COPY_MAX = 16384


def gemm_copies_b(m, n, k, trans_a=False, trans_b=False, small_mnk=GEMM_SMALL_MNK, single=False):
    """Whether the product out (m, n) = op(a) @ op(b) is computed on a transposed copy of
    b (see GEMM_COPY_MAX): float32 (``single``), out = a @ b^T, GEMM_SMALL_K < k <=
    GEMM_SMALL_MAX_K, n k <= GEMM_COPY_MAX, m n k <= GEMM_SMALL_MAX_MNK and a BLAS with
    small-matrix kernels (the untransposed product's tiles are theirs)."""
    return (
        single
        and trans_b
        and not trans_a
        and small_mnk > 0
        and GEMM_SMALL_K < k <= GEMM_SMALL_MAX_K
        and n * k <= GEMM_COPY_MAX
        and 1.0 * m * n * k <= GEMM_SMALL_MAX_MNK
    )


def gemm_grid(
    m, n, k, trans_a=False, trans_b=False, small_mnk=GEMM_SMALL_MNK, single=False, own=GEMM_OWN
):
    """(rows, cols): how many parts each side of a product's (m, n) output is cut in.

    Both are powers of two; ``rows * cols`` is the number of tiles of
    :func:`gemm_blocks`. Depends on the shape, the operands' transposition, the dtype
    (``single``: float32), the BLAS's ``small_mnk`` and whether fastnn's own GEMM runs
    (``own``), never on a thread count.
    """
    mnk = 1.0 * m * n * k
    rows = cols = 1
    tn = trans_b and not trans_a  # out = a @ b^T
    if tn:
        small = (
            not single
            and small_mnk > 0
            and GEMM_TN_MIN_K <= k <= GEMM_SMALL_MAX_K
            and m * n > GEMM_TN_MAX_OUT
            and mnk <= GEMM_SMALL_MAX_MNK
        )
    else:
        small = (
            small_mnk > 0
            and GEMM_SMALL_K < k <= GEMM_SMALL_MAX_K
            and small_mnk < mnk <= GEMM_SMALL_MAX_MNK
        )
    if small:
        # calls that OpenBLAS's small-matrix kernels take (at most small_mnk, and for
        # a @ b^T at most GEMM_TN_MAX_OUT outputs): halve the longer side of the largest
        # tile (columns on a tie) until it fits
        units_m = (m + GEMM_UNIT - 1) // GEMM_UNIT
        units_n = (n + GEMM_UNIT - 1) // GEMM_UNIT
        while True:
            # the largest part of each side (gemm_edge's parts differ by one unit at most)
            tile_m = min(m, (units_m + rows - 1) // rows * GEMM_UNIT)
            tile_n = min(n, (units_n + cols - 1) // cols * GEMM_UNIT)
            if 1.0 * tile_m * tile_n * k <= small_mnk and (
                not tn or tile_m * tile_n <= GEMM_TN_MAX_OUT
            ):
                return rows, cols
            cut_cols = units_n >= 2 * cols
            cut_rows = units_m >= 2 * rows
            if cut_cols and (tile_n >= tile_m or not cut_rows):
                cols *= 2
            elif cut_rows:
                rows *= 2
            else:  # no tile fits (a short side): the threads' rule
                rows = cols = 1
                break
    flops = 2.0 * mnk
    if flops < GEMM_SPLIT_FLOPS:
        return rows, cols
    owned = own and k > GEMM_SMALL_K  # tiles of fastnn's own GEMM, shared
    tile_flops = GEMM_OWN_TILE_FLOPS if owned else GEMM_TILE_FLOPS
    min_cols = GEMM_OWN_MIN_COLS if owned else GEMM_MIN_COLS
    want = 2
    while 2.0 * want * tile_flops <= flops and not (owned and want >= GEMM_OWN_MAX_TILES):
        want *= 2
    while rows * cols < want:
        cut_cols = n >= 2 * cols * min_cols
        cut_rows = m >= 2 * rows * GEMM_MIN_ROWS
        # the tile's longer side; the columns first for the own GEMM's shared packing
        if cut_cols and (owned or n * rows >= m * cols or not cut_rows):
            cols *= 2
        elif cut_rows:
            rows *= 2
        else:
            break
    return rows, cols


def gemm_edge(side, parts, i):
    """Where part ``i`` of a side of length ``side`` cut in ``parts`` starts (``i ==
    parts``: the side's end). The side's GEMM_UNIT-wide units are shared out evenly, so
    the parts differ by at most one unit, the last one ending at ``side``."""
    if i >= parts:
        return side
    units = (side + GEMM_UNIT - 1) // GEMM_UNIT
    return i * units // parts * GEMM_UNIT


def gemm_claim(t, tiles):
    """The tile (an index into :func:`gemm_blocks`) that the t-th claim of a product's
    ``tiles`` (a power of two) takes on several threads: t's bits reversed.

    Tiles claimed one after the other run side by side; in the list's order they would
    be neighbours, whose edge shares cache lines of the output wherever the output does
    not start on a cache line (an unaligned array): the threads then write the same
    lines, and config C's dW2 in 32 column tiles ran 1.50x faster on 2 threads instead
    of 1.90x (docs/benchmarks/2026-12-06-shared-packing.md). Reversed, the tiles of
    successive claims are far apart. The order never changes a tile's bits."""
    r, s, bit = 0, 1, 1  # (t is never assigned: Numba's parallel loop index)
    while s < tiles:
        r = 2 * r + (1 if t & bit else 0)
        bit *= 2
        s *= 2
    return r


def gemm_narrowest(side, parts):
    """The shortest of the ``parts`` parts :func:`gemm_edge` cuts a side in.

    That is the first (the parts hold the floor or the ceiling of the units' share) or
    the last, which may end in a partial unit. Written out, not through gemm_edge, for
    Numba compiles it alone.
    """
    units = (side + GEMM_UNIT - 1) // GEMM_UNIT
    first = units // parts * GEMM_UNIT if parts > 1 else side
    return min(first, side - (parts - 1) * units // parts * GEMM_UNIT)


def gemm_blocks(m, n, k, trans_a=False, trans_b=False, dtype=np.float64):
    """The tiles of a product's output, row by row of tiles (on several threads, the
    t-th claim takes tile :func:`gemm_claim` (t)).

    Parameters
    ----------
    m, n : int
        The output's shape: ``out (m, n) = op(a) (m, k) @ op(b) (k, n)``.
    k : int
        The inner dimension; it is never split, so every output element is computed by
        one BLAS call over the whole of ``k`` whatever thread makes it.
    trans_a, trans_b : bool
        Whether the product reads ``a`` or ``b`` transposed (OpenBLAS's small-matrix
        kernels take ``out = a @ b^T`` only with at most 1200 outputs: float64 ones are
        cut into such tiles).
    dtype : float32 or float64
        The operands' dtype (the cut for ``out = a @ b^T`` depends on it).

    Returns
    -------
    list of tuple of int
        ``(row0, row1, col0, col1)`` for each tile ``out[row0:row1, col0:col1]``, row
        by row of tiles. They cover the output exactly once; one tile (the whole
        output) for products under ``2**25`` flops, unless the BLAS's small-matrix
        kernels take tiles of it (``GEMM_SMALL_MNK``). A product made on a transposed
        copy of b (:func:`gemm_copies_b`) has the tiles of ``a @ bt``. Depends on the
        shape, the transposition, the dtype and the BLAS only, never on a thread count.
    """
    single = np.dtype(dtype) == np.float32
    if gemm_copies_b(m, n, k, trans_a, trans_b, GEMM_SMALL_MNK, single):
        trans_b = False  # the tiles of a @ bt, bt the transposed copy of b
    rows, cols = gemm_grid(m, n, k, trans_a, trans_b, GEMM_SMALL_MNK, single, GEMM_OWN)
    return [
        (
            gemm_edge(m, rows, i),
            gemm_edge(m, rows, i + 1),
            gemm_edge(n, cols, j),
            gemm_edge(n, cols, j + 1),
        )
        for i in range(rows)
        for j in range(cols)
    ]


def gemm(a, b, out, trans_a=False, trans_b=False, beta=0.0):
    """out = op(a) @ op(b) + beta * out, row-major; op transposes when asked.

    ``a`` (m, k) or (k, m) and ``b`` (k, n) or (n, k), ``out`` (m, n), all 2-D of one
    dtype. Each tile of :func:`gemm_blocks` is one call of fastnn's single-threaded
    BLAS (:func:`fastnn._blas.gemm_call`) on the arrays' own buffers, as the compiled
    kernels make it, or, for an inner dimension 1 <= k <= GEMM_SMALL_K and beta = 0,
    :func:`gemm_small_k`'s sequential sum (docs/spec.md §10); a small float32
    ``a @ b^T`` is ``a @ bt`` on a transposed copy of b (:func:`gemm_copies_b`, the
    kernels' copy); operands that are not C-contiguous are copied first (the values are
    the same: BLAS packs its operands anyway).
    """
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    target = out
    if not out.flags.c_contiguous:
        out = np.ascontiguousarray(out)
    m, n = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    if gemm_copies_b(m, n, k, trans_a, trans_b, single=out.dtype == np.float32):
        b, trans_b = np.ascontiguousarray(b.T), False  # then a @ bt's tiles
    lda, ldb, ldc = max(1, a.shape[1]), max(1, b.shape[1]), max(1, n)
    small = 1 <= k <= GEMM_SMALL_K and beta == 0
    blocks = gemm_blocks(m, n, k, trans_a, trans_b, out.dtype)
    # one row of tiles: op(a) packed once for them all where fastnn's own GEMM runs, as
    # the kernels do (the same bits either way)
    shared = False
    try:
        shared = (
            GEMM_OWN
            and len(blocks) > 1
            and blocks[-1][0] == 0
            and beta == 0
            and not small
            and gemm_share(trans_a, m, n, k, a, lda, out, ldc, gemm_narrowest(n, len(blocks)))
        )
        _gemm_tiles(a, b, out, trans_a, trans_b, k, lda, ldb, ldc, beta, small, blocks)
    finally:
        if shared:
            gemm_unshare(out.dtype)
    if out is not target:
        target[...] = out
    return target


def _gemm_tiles(a, b, out, trans_a, trans_b, k, lda, ldb, ldc, beta, small, blocks):
    """gemm's tiles, one after the other."""
    for r0, r1, c0, c1 in blocks:
        if small:
            gemm_small_k(a, b, out, trans_a, trans_b, r0, r1, c0, c1)
            continue
        # out[r0:r1, c0:c1] = op(a)[r0:r1] @ op(b)[:, c0:c1]
        gemm_call(
            trans_a,
            trans_b,
            r1 - r0,
            c1 - c0,
            k,
            a,
            r0 if trans_a else r0 * lda,
            lda,
            b,
            c0 * ldb if trans_b else c0,
            ldb,
            out,
            r0 * ldc + c0,
            ldc,
            beta,
        )


def gemm_small_k(a, b, out, trans_a, trans_b, r0, r1, c0, c1):
    """out[r0:r1, c0:c1] = op(a)[r0:r1] @ op(b)[:, c0:c1] for 1 <= k <= GEMM_SMALL_K.

    Every element is summed in the order p = 0 .. k - 1, ``((a_i0 b_0j + a_i1 b_1j) +
    a_i2 b_2j) + ...``, each product and sum rounded to the dtype (NumPy's multiply and
    add, no fused multiply-add): the compiled kernels' loops give the same bits.
    """
    opa = a.T if trans_a else a
    opb = b.T if trans_b else b
    tile = out[r0:r1, c0:c1]
    with np.errstate(all="ignore"):  # silent as a BLAS call: inf * 0 is NaN, no warning
        np.multiply(opa[r0:r1, 0:1], opb[0:1, c0:c1], out=tile)
        for p in range(1, opa.shape[1]):
            tile += opa[r0:r1, p : p + 1] * opb[p : p + 1, c0:c1]
