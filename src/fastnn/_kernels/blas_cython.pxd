# Header-only helpers shared by the Cython kernels: a row-major GEMM over fastnn's BLAS
# (fastnn/_blas.py: a private single-threaded OpenBLAS instance; cut into
# shape-determined tiles, run on one thread or on fastnn_pool.h's) and sums taken in
# exactly NumPy's order. Everything is ``cdef inline``, so modules that cimport this
# file compile their own copy and no extension module stands behind it. A module that
# calls gemm sets its BLAS pointers when it is imported:
#     fnn_set_gemm(*fastnn._blas.gemm_addresses(), small_gemm_mnk(), own_gemm(),
#                  *share_addresses())

from cython cimport floating

from fastnn._kernels.fastnn_simd cimport (
    FNN_SMALL_K,
    fnn_gemm_small_k_f32,
    fnn_gemm_small_k_f64,
)


cdef extern from "fastnn_blas.h" nogil:
    ctypedef void (*fnn_sgemm_fn)(char*, char*, int*, int*, int*, float*, float*, int*,
                                  float*, int*, float*, float*, int*) noexcept nogil
    ctypedef void (*fnn_dgemm_fn)(char*, char*, int*, int*, int*, double*, double*,
                                  int*, double*, int*, double*, double*,
                                  int*) noexcept nogil
    fnn_sgemm_fn fnn_sgemm
    fnn_dgemm_fn fnn_dgemm
    double fnn_small_gemm_mnk
    int fnn_gemm_own
    ctypedef int (*fnn_share_fn)(int itemsize, int trans_a, int m, int n, int k,
                                 const void* a, int lda, const void* out, int ldc,
                                 int narrowest) noexcept nogil
    ctypedef void (*fnn_share_pack_fn)(int itemsize, int chunk) noexcept nogil
    ctypedef void (*fnn_unshare_fn)(int itemsize) noexcept nogil
    fnn_share_fn fnn_gemm_share
    fnn_share_pack_fn fnn_gemm_share_pack
    fnn_unshare_fn fnn_gemm_unshare
    void fnn_set_gemm(size_t s, size_t d, double small_mnk, int own, size_t share,
                      size_t pack, size_t unshare)
    const float* fnn_transposed_f32(const float* b, Py_ssize_t n, Py_ssize_t k,
                                    Py_ssize_t ldb, int registers)


# The tiling rule of fastnn.reference.blas (gemm_grid, gemm_edge; the reasons for its
# numbers are there), kept equal to it: a test compares the grids on many shapes.
cdef enum:
    GEMM_UNIT = 16
    GEMM_MIN_ROWS = 256
    GEMM_MIN_COLS = 128
    GEMM_SMALL_MAX_K = 256
    GEMM_TN_MAX_OUT = 1200
    GEMM_TN_MIN_K = 32
    GEMM_COPY_MAX = 16384  # fastnn_blas.h's FNN_GEMM_COPY_MAX
    GEMM_SPLIT_FLOPS = 33554432  # 2**25
    GEMM_SMALL_MAX_MNK = 67108864  # 2**26
    GEMM_OWN_TILE_FLOPS = 67108864  # 2**26
    GEMM_OWN_MIN_COLS = 64
    GEMM_OWN_MAX_TILES = 64


cdef inline bint gemm_copies_b(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, bint trans_a,
                               bint trans_b, bint single) noexcept nogil:
    """fastnn.reference.blas.gemm_copies_b with its small_mnk = fnn_small_gemm_mnk."""
    return (single and trans_b and not trans_a and fnn_small_gemm_mnk > 0
            and FNN_SMALL_K < k <= GEMM_SMALL_MAX_K and n * k <= GEMM_COPY_MAX
            and <double>m * n * k <= GEMM_SMALL_MAX_MNK)


cdef inline void gemm_grid(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, bint trans_a,
                           bint trans_b, bint single, int* rows, int* cols) noexcept nogil:
    """fastnn.reference.blas.gemm_grid with its small_mnk = fnn_small_gemm_mnk and own =
    fnn_gemm_own: the parts each side of the output is cut in (single: float32)."""
    cdef double mnk = <double>m * n * k
    cdef double flops = 2.0 * mnk
    cdef double split = GEMM_SPLIT_FLOPS
    cdef double tile = 2147483648.0  # GEMM_TILE_FLOPS, 2**31 (past a C int: not an enum)
    cdef double small = fnn_small_gemm_mnk
    cdef double small_max = GEMM_SMALL_MAX_MNK
    cdef Py_ssize_t units_m = (m + GEMM_UNIT - 1) // GEMM_UNIT
    cdef Py_ssize_t units_n = (n + GEMM_UNIT - 1) // GEMM_UNIT
    cdef Py_ssize_t tile_m, tile_n
    cdef long long want = 2
    cdef bint cut_rows, cut_cols, cut
    cdef bint owned = fnn_gemm_own and k > FNN_SMALL_K
    cdef Py_ssize_t min_cols = GEMM_OWN_MIN_COLS if owned else GEMM_MIN_COLS
    cdef bint tn = trans_b and not trans_a  # out = a @ b^T
    rows[0] = 1
    cols[0] = 1
    if tn:
        cut = (not single and small > 0 and GEMM_TN_MIN_K <= k <= GEMM_SMALL_MAX_K
               and m * n > GEMM_TN_MAX_OUT and mnk <= small_max)
    else:
        cut = (small > 0 and FNN_SMALL_K < k <= GEMM_SMALL_MAX_K
               and small < mnk <= small_max)
    if cut:
        while True:
            tile_m = min(m, (units_m + rows[0] - 1) // rows[0] * GEMM_UNIT)
            tile_n = min(n, (units_n + cols[0] - 1) // cols[0] * GEMM_UNIT)
            if (<double>tile_m * tile_n * k <= small
                    and (not tn or tile_m * tile_n <= GEMM_TN_MAX_OUT)):
                return
            cut_cols = units_n >= 2 * <Py_ssize_t>cols[0]
            cut_rows = units_m >= 2 * <Py_ssize_t>rows[0]
            if cut_cols and (tile_n >= tile_m or not cut_rows):
                cols[0] = cols[0] * 2
            elif cut_rows:
                rows[0] = rows[0] * 2
            else:
                rows[0] = 1
                cols[0] = 1
                break
    if flops < split:
        return
    if owned:
        tile = GEMM_OWN_TILE_FLOPS
    while 2.0 * want * tile <= flops and not (owned and want >= GEMM_OWN_MAX_TILES):
        want = want * 2
    while <long long>rows[0] * cols[0] < want:
        cut_cols = n >= 2 * <Py_ssize_t>cols[0] * min_cols
        cut_rows = m >= 2 * <Py_ssize_t>rows[0] * GEMM_MIN_ROWS
        if cut_cols and (owned or n * rows[0] >= m * cols[0] or not cut_rows):
            cols[0] = cols[0] * 2
        elif cut_rows:
            rows[0] = rows[0] * 2
        else:
            break


cdef inline bint gemm_one_tile(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """The (m, n) output of a product a @ b with inner dimension k is one tile of
    gemm_grid. (Only modules that set fnn_set_gemm see the small-matrix cut, which
    never applies to k <= FNN_SMALL_K, the one use of this outside dense_cython.)"""
    cdef int rows, cols
    gemm_grid(m, n, k, False, False, False, &rows, &cols)
    return rows * cols == 1


cdef inline Py_ssize_t gemm_edge(Py_ssize_t side, int parts, int i) noexcept nogil:
    """fastnn.reference.blas.gemm_edge: where part i of a side cut in parts starts."""
    cdef Py_ssize_t units
    if i >= parts:
        return side
    units = (side + GEMM_UNIT - 1) // GEMM_UNIT
    return i * units // parts * GEMM_UNIT


cdef inline int gemm_narrowest(Py_ssize_t side, int parts) noexcept nogil:
    """fastnn.reference.blas.gemm_narrowest: the shortest of gemm_edge's parts."""
    return min(gemm_edge(side, parts, 1), side - gemm_edge(side, parts, parts - 1))


cdef inline void gemm_call(bint trans_a, bint trans_b, int m, int n, int k,
                           const floating* a, int lda, const floating* b, int ldb,
                           floating* c, int ldc) noexcept nogil:
    """c (m, n) = op(a) @ op(b), all row-major, in one BLAS call.

    lda, ldb, ldc are the stored row lengths of a, b and c. A row-major matrix is its
    own transpose in column-major order, so BLAS computes c^T = op(b)^T op(a)^T: b goes
    first and no transposed copy is made. alpha = 1, beta = 0, the reference's call.
    An inner dimension 1 <= k <= FNN_SMALL_K is summed by fastnn itself, in the order
    p = 0 .. k - 1 (fastnn_simd.h), as the reference does.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef floating one = 1
    cdef floating zero = 0
    if 1 <= k <= FNN_SMALL_K:
        if floating is float:
            fnn_gemm_small_k_f32(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc)
        else:
            fnn_gemm_small_k_f64(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc)
        return
    if floating is float:
        fnn_sgemm(&tb, &ta, &n, &m, &k, &one, <float*>b, &ldb, <float*>a, &lda,
                  &zero, c, &ldc)
    else:
        fnn_dgemm(&tb, &ta, &n, &m, &k, &one, <double*>b, &ldb, <double*>a, &lda,
                  &zero, c, &ldc)


cdef inline void gemm_tile(bint trans_a, bint trans_b, int k, const floating* a, int lda,
                           const floating* b, int ldb, floating* c, int ldc, int r0,
                           int r1, int c0, int c1) noexcept nogil:
    """c[r0:r1, c0:c1] = op(a)[r0:r1] @ op(b)[:, c0:c1]: one BLAS call, the whole k."""
    gemm_call(trans_a, trans_b, r1 - r0, c1 - c0, k, a + r0 if trans_a else a + r0 * lda,
              lda, b + c0 * ldb if trans_b else b + c0, ldb, c + r0 * ldc + c0, ldc)


cdef extern from "fastnn_pool.h" nogil:
    ctypedef void (*fnn_task_fn)(void* ctx, int task) noexcept nogil
    void fnn_pool_run(fnn_task_fn fn, void* ctx, int n_tasks, int n_threads)


# One product's tiles as a job of fastnn_pool.h (float or double behind the void*).
cdef struct GemmJob:
    bint trans_a
    bint trans_b
    int m, n, k, lda, ldb, ldc, rows, cols
    const void* a
    const void* b
    void* c


cdef inline void gemm_tile_i(const GemmJob* g, int t, const floating* a, const floating* b,
                             floating* c) noexcept nogil:
    """Tile t of the job's (rows, cols) grid, row by row of tiles: one BLAS call."""
    cdef int i = t // g.cols
    cdef int j = t % g.cols
    gemm_tile(g.trans_a, g.trans_b, g.k, a, g.lda, b, g.ldb, c, g.ldc,
              gemm_edge(g.m, g.rows, i), gemm_edge(g.m, g.rows, i + 1),
              gemm_edge(g.n, g.cols, j), gemm_edge(g.n, g.cols, j + 1))


cdef inline int gemm_claim(int t, int tiles) noexcept nogil:
    """fastnn.reference.blas.gemm_claim: the tile of the t-th claim (t's bits reversed:
    tiles running side by side are not neighbours sharing the output's cache lines)."""
    cdef int r = 0
    cdef int s = 1
    while s < tiles:
        r = 2 * r + t % 2
        t = t // 2
        s = s * 2
    return r


cdef inline void gemm_share_task_f32(void* job, int t) noexcept nogil:
    fnn_gemm_share_pack(4, t)


cdef inline void gemm_share_task_f64(void* job, int t) noexcept nogil:
    fnn_gemm_share_pack(8, t)


cdef inline void gemm_task_f32(void* job, int t) noexcept nogil:
    cdef GemmJob* g = <GemmJob*>job
    gemm_tile_i(g, gemm_claim(t, g.rows * g.cols), <const float*>g.a, <const float*>g.b,
                <float*>g.c)


cdef inline void gemm_task_f64(void* job, int t) noexcept nogil:
    cdef GemmJob* g = <GemmJob*>job
    gemm_tile_i(g, gemm_claim(t, g.rows * g.cols), <const double*>g.a, <const double*>g.b,
                <double*>g.c)


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      const floating* a, int lda, const floating* b, int ldb,
                      floating* c, int ldc, int n_threads) noexcept nogil:
    """c (m, n) = op(a) @ op(b), all row-major; op(a) is (m, k), op(b) is (k, n).

    A small float32 a @ b^T is a @ bt on a transposed copy of b (gemm_copies_b). The
    tiles of gemm_grid, each one BLAS call (gemm_tile), run one after the other,
    or as one job of fastnn_pool.h whose threads (the caller and up to n_threads - 1
    helpers) claim them one at a time: the same calls either way, so the same bits as
    the reference's gemm. A product below GEMM_SPLIT_FLOPS runs its tiles (the
    small-matrix cut's, a few microseconds each) on the caller's thread, as the Numba
    kernels do. BLAS itself should run on one thread (the caller's job).
    """
    cdef GemmJob job
    cdef int t
    cdef int chunks = 0
    if floating is float:
        if gemm_copies_b(m, n, k, trans_a, trans_b, True):
            # a @ bt on the thread's transposed copy of b (fastnn_blas.h)
            b = fnn_transposed_f32(b, n, k, ldb, 1)
            trans_b = False
            ldb = n if n > 0 else 1
    gemm_grid(m, n, k, trans_a, trans_b, floating is float, &job.rows, &job.cols)
    if job.rows * job.cols == 1:
        gemm_call(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc)
        return
    job.trans_a = trans_a
    job.trans_b = trans_b
    job.m = m
    job.n = n
    job.k = k
    job.lda = lda
    job.ldb = ldb
    job.ldc = ldc
    job.a = a
    job.b = b
    job.c = c
    if job.rows == 1 and k > FNN_SMALL_K and fnn_gemm_share != NULL:
        # one row of tiles: op(a) packed once for them all (fastnn_gemm.h), in chunks
        # that the threads share out as they do the tiles
        chunks = fnn_gemm_share(sizeof(floating), trans_a, m, n, k, a, lda, c, ldc,
                                gemm_narrowest(n, job.cols))
    if n_threads <= 1 or 2.0 * m * n * k < GEMM_SPLIT_FLOPS:
        for t in range(chunks):
            fnn_gemm_share_pack(sizeof(floating), t)
        for t in range(job.rows * job.cols):
            gemm_tile_i(&job, t, a, b, c)
    elif floating is float:
        if chunks:
            fnn_pool_run(gemm_share_task_f32, NULL, chunks, n_threads)
        fnn_pool_run(gemm_task_f32, &job, job.rows * job.cols, n_threads)
    else:
        if chunks:
            fnn_pool_run(gemm_share_task_f64, NULL, chunks, n_threads)
        fnn_pool_run(gemm_task_f64, &job, job.rows * job.cols, n_threads)
    if chunks:
        fnn_gemm_unshare(sizeof(floating))


# --- sums in NumPy's order ---------------------------------------------------------
# NumPy adds a contiguous run by pairwise summation: runs of up to 128 values go
# through eight interleaved partial sums, longer runs are split in two at a multiple
# of 8. A reduction starts from the identity +0.0 and adds that pairwise total. The
# helpers below follow the same tree, so fastnn's sums equal the reference's bit for bit.

cdef enum:
    PW_BLOCK = 128  # NumPy's PW_BLOCKSIZE: longest run summed without splitting


cdef inline Py_ssize_t pw_split(Py_ssize_t n) noexcept nogil:
    """Where NumPy splits a run of n > PW_BLOCK values: about half, a multiple of 8."""
    cdef Py_ssize_t half = n // 2
    return half - half % 8


cdef inline floating pw_block(const floating* a, Py_ssize_t n) noexcept nogil:
    """Sum of a[:n] for n <= PW_BLOCK, in the order and precision of NumPy's leaf."""
    cdef Py_ssize_t i
    cdef floating res, r0, r1, r2, r3, r4, r5, r6, r7
    if n < 8:
        res = -0.0  # as NumPy, so that a run of -0.0 sums to -0.0
        for i in range(n):
            res = res + a[i]
        return res
    r0 = a[0]
    r1 = a[1]
    r2 = a[2]
    r3 = a[3]
    r4 = a[4]
    r5 = a[5]
    r6 = a[6]
    r7 = a[7]
    i = 8
    while i < n - n % 8:
        r0 = r0 + a[i]
        r1 = r1 + a[i + 1]
        r2 = r2 + a[i + 2]
        r3 = r3 + a[i + 3]
        r4 = r4 + a[i + 4]
        r5 = r5 + a[i + 5]
        r6 = r6 + a[i + 6]
        r7 = r7 + a[i + 7]
        i = i + 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res = res + a[i]
        i = i + 1
    return res


cdef inline floating pw_sum(const floating* a, Py_ssize_t n) noexcept nogil:
    """Pairwise sum of a[:n] in the array's own precision (NumPy's order)."""
    cdef Py_ssize_t n2
    if n <= PW_BLOCK:
        return pw_block(a, n)
    n2 = pw_split(n)
    return pw_sum(a, n2) + pw_sum(a + n2, n - n2)


cdef inline floating pw_dot(const floating* a, const floating* b,
                            Py_ssize_t n) noexcept nogil:
    """Pairwise sum of the products a[i] * b[i], each rounded to the array dtype, as
    NumPy's ``np.sum(a * b)`` forms the product array first."""
    cdef floating buf[PW_BLOCK]
    cdef Py_ssize_t i, n2
    if n <= PW_BLOCK:
        for i in range(n):
            buf[i] = a[i] * b[i]
        return pw_block(buf, n)
    n2 = pw_split(n)
    return pw_dot(a, b, n2) + pw_dot(a + n2, b + n2, n - n2)


cdef inline double pw_sum_wide(const floating* a, Py_ssize_t n) noexcept nogil:
    """Pairwise sum of a[:n] converted to float64 (``np.sum(a.astype(np.float64))``)."""
    cdef double buf[PW_BLOCK]
    cdef Py_ssize_t i, n2
    if floating is double:
        return pw_sum(a, n)
    else:
        if n <= PW_BLOCK:
            for i in range(n):
                buf[i] = a[i]
            return pw_block(buf, n)
        n2 = pw_split(n)
        return pw_sum_wide(a, n2) + pw_sum_wide(a + n2, n - n2)
