# Header-only helpers shared by the Cython kernels: a row-major GEMM over fastnn's BLAS
# (fastnn/_blas.py: a private single-threaded instance of SciPy's OpenBLAS; cut into
# shape-determined blocks, run on one thread or on fastnn_pool.h's) and sums taken in
# exactly NumPy's order. Everything is ``cdef inline``, so modules that cimport this
# file compile their own copy and no extension module stands behind it. A module that
# calls gemm sets its BLAS pointers when it is imported:
#     fnn_set_gemm(*fastnn._blas.gemm_addresses())

from cython cimport floating


cdef extern from "fastnn_blas.h" nogil:
    ctypedef void (*fnn_sgemm_fn)(char*, char*, int*, int*, int*, float*, float*, int*,
                                  float*, int*, float*, float*, int*) noexcept nogil
    ctypedef void (*fnn_dgemm_fn)(char*, char*, int*, int*, int*, double*, double*,
                                  int*, double*, int*, double*, double*,
                                  int*) noexcept nogil
    fnn_sgemm_fn fnn_sgemm
    fnn_dgemm_fn fnn_dgemm
    void fnn_set_gemm(size_t s, size_t d)


# The partition rule of fastnn.reference.blas.gemm_partition (kept equal to it; a test
# compares them on many shapes through the products' bits).
cdef enum:
    GEMM_UNIT = 16


cdef inline int gemm_block(int m, int n, int k, bint* by_columns) noexcept nogil:
    """fastnn.reference.blas.gemm_partition: sets by_columns, returns the block size."""
    cdef double flops = 2.0 * m * n * k
    cdef int parts = 4 if flops >= 8589934592.0 else 2 if flops >= 33554432.0 else 1
    cdef int side, per
    by_columns[0] = n >= m
    side = n if by_columns[0] else m
    while parts > 1 and side < parts * GEMM_UNIT:
        parts = parts // 2
    if parts == 1:
        return side
    per = (side + parts - 1) // parts
    return (per + GEMM_UNIT - 1) // GEMM_UNIT * GEMM_UNIT


cdef inline void gemm_call(bint trans_a, bint trans_b, int m, int n, int k,
                           const floating* a, int lda, const floating* b, int ldb,
                           floating* c, int ldc) noexcept nogil:
    """c (m, n) = op(a) @ op(b), all row-major, in one BLAS call.

    lda, ldb, ldc are the stored row lengths of a, b and c. A row-major matrix is its
    own transpose in column-major order, so BLAS computes c^T = op(b)^T op(a)^T: b goes
    first and no transposed copy is made. alpha = 1, beta = 0, the reference's call.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef floating one = 1
    cdef floating zero = 0
    if floating is float:
        fnn_sgemm(&tb, &ta, &n, &m, &k, &one, <float*>b, &ldb, <float*>a, &lda,
                  &zero, c, &ldc)
    else:
        fnn_dgemm(&tb, &ta, &n, &m, &k, &one, <double*>b, &ldb, <double*>a, &lda,
                  &zero, c, &ldc)


cdef inline void gemm_part(bint trans_a, bint trans_b, int m, int n, int k,
                           const floating* a, int lda, const floating* b, int ldb,
                           floating* c, int ldc, bint by_columns, int lo,
                           int hi) noexcept nogil:
    """Block [lo, hi) of c's columns (by_columns) or rows: one BLAS call."""
    if by_columns:  # c[:, lo:hi] = op(a) @ op(b)[:, lo:hi]
        gemm_call(trans_a, trans_b, m, hi - lo, k, a, lda,
                  b + lo * ldb if trans_b else b + lo, ldb, c + lo, ldc)
    else:  # c[lo:hi] = op(a)[lo:hi] @ op(b)
        gemm_call(trans_a, trans_b, hi - lo, n, k, a + lo if trans_a else a + lo * lda,
                  lda, b, ldb, c + lo * ldc, ldc)


cdef extern from "fastnn_pool.h" nogil:
    ctypedef void (*fnn_task_fn)(void* ctx, int task) noexcept nogil
    void fnn_pool_run(fnn_task_fn fn, void* ctx, int n_tasks, int n_threads)


# One product's blocks as a job of fastnn_pool.h (float or double behind the void*).
cdef struct GemmJob:
    bint trans_a
    bint trans_b
    bint by_columns
    int m, n, k, lda, ldb, ldc, block, side
    const void* a
    const void* b
    void* c


cdef inline void gemm_task_f32(void* job, int i) noexcept nogil:
    cdef GemmJob* g = <GemmJob*>job
    gemm_part(g.trans_a, g.trans_b, g.m, g.n, g.k, <const float*>g.a, g.lda,
              <const float*>g.b, g.ldb, <float*>g.c, g.ldc, g.by_columns, i * g.block,
              min(g.side, i * g.block + g.block))


cdef inline void gemm_task_f64(void* job, int i) noexcept nogil:
    cdef GemmJob* g = <GemmJob*>job
    gemm_part(g.trans_a, g.trans_b, g.m, g.n, g.k, <const double*>g.a, g.lda,
              <const double*>g.b, g.ldb, <double*>g.c, g.ldc, g.by_columns, i * g.block,
              min(g.side, i * g.block + g.block))


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      const floating* a, int lda, const floating* b, int ldb,
                      floating* c, int ldc, int n_threads) noexcept nogil:
    """c (m, n) = op(a) @ op(b), all row-major; op(a) is (m, k), op(b) is (k, n).

    The blocks of gemm_block, each one BLAS call (gemm_call), run one after the other,
    or as one job of fastnn_pool.h on the caller and up to n_threads - 1 helper
    threads: the same calls either way, so the same bits as the reference's gemm.
    BLAS itself should run on one thread (the caller's job).
    """
    cdef GemmJob job
    cdef int n_blocks, i, lo
    job.block = gemm_block(m, n, k, &job.by_columns)
    job.side = n if job.by_columns else m
    if job.block <= 0 or job.block >= job.side:
        gemm_call(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc)
        return
    n_blocks = (job.side + job.block - 1) // job.block
    if n_threads <= 1:
        for i in range(n_blocks):
            lo = i * job.block
            gemm_part(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc, job.by_columns,
                      lo, min(job.side, lo + job.block))
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
    if floating is float:
        fnn_pool_run(gemm_task_f32, &job, n_blocks, n_threads)
    else:
        fnn_pool_run(gemm_task_f64, &job, n_blocks, n_threads)


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
