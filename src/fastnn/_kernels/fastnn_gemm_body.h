/* fastnn's own GEMM for one element type: included by fastnn_gemm.h once for float32
 * and once for float64, with the type's macros defined (see there): FNN_T, FNN_V (its
 * zmm vector), FNN_L (lanes), FNN_MASK, FNN_MR, FNN_MC, FNN_KC, the intrinsics FNN_* and
 * FNN_TRANSPOSE (an FNN_L x FNN_L transpose in registers), FNN_N (name suffix) and
 * FNN_GEMM_FN (the BLAS ?gemm_ type), all undefined again at the end. No include guard:
 * one copy per type. */

#define FNN_MV (FNN_MR / FNN_L) /* zmm vectors a micro-panel row block */
#define FNN_NG ((FNN_NR + FNN_L - 1) / FNN_L) /* zmm vectors an NR-column row */

static FNN_GEMM_FN FNN_N(fnn_own_fallback) = NULL;

FNN_OWN_TARGET static inline FNN_MASK FNN_N(fnn_own_mask)(int n)
{
    return n <= 0 ? (FNN_MASK)0 : n >= FNN_L ? (FNN_MASK)-1 : (FNN_MASK)((1u << n) - 1);
}

/* op(A)[i0:i0+mc, p0:p0+kc] -> MR-row micro-panels dst[panel * kc * MR + p * MR + r],
 * rows past mc zero. */
FNN_OWN_TARGET static void FNN_N(fnn_own_pack_a)(char ta, int mc, int kc, const FNN_T *A, int lda, int i0, int p0,
        FNN_T *dst)
{
    for (int ir = 0; ir < mc; ir += FNN_MR) {
        FNN_T *d = dst + (size_t)ir * kc;
        int mr = mc - ir < FNN_MR ? mc - ir : FNN_MR;
        if (ta == 'N') {
            const FNN_T *s = A + (i0 + ir) + (size_t)p0 * lda;
            for (int p = 0; p < kc; p++)
                for (int v = 0; v < FNN_MV; v++) {
                    FNN_MASK mk = FNN_N(fnn_own_mask)(mr - FNN_L * v);
                    FNN_STORE(d + p * FNN_MR + FNN_L * v, FNN_MASKZ_LOADU(mk, s + (size_t)p * lda + FNN_L * v));
                }
        } else { /* op(A)(i, p) = A[p + i * lda] */
            for (int v = 0; v < FNN_MV; v++) {
                int rows = mr - FNN_L * v;
                if (rows > FNN_L)
                    rows = FNN_L;
                for (int pb = 0; pb < kc; pb += FNN_L) {
                    int pl = kc - pb < FNN_L ? kc - pb : FNN_L;
                    FNN_MASK mk = FNN_N(fnn_own_mask)(pl);
                    FNN_V r[FNN_L];
                    for (int q = 0; q < FNN_L; q++)
                        r[q] = q < rows ? FNN_MASKZ_LOADU(mk, A + (p0 + pb) + (size_t)(i0 + ir + FNN_L * v + q) * lda)
                                        : FNN_SETZERO();
                    FNN_TRANSPOSE(r);
                    for (int q = 0; q < pl; q++)
                        FNN_STORE(d + (pb + q) * FNN_MR + FNN_L * v, r[q]);
                }
            }
        }
    }
}

/* The untransposed A's whole MC x KC block, column by column (mc contiguous values a
 * column): full micro-panels here, a partial last one by fnn_own_pack_a. */
FNN_OWN_TARGET static void FNN_N(fnn_own_pack_a_block)(int mc, int kc, const FNN_T *A, int lda, int i0, int p0,
        FNN_T *dst)
{
    int full = mc / FNN_MR;
    for (int p = 0; p < kc; p++) {
        const FNN_T *s = A + i0 + (size_t)(p0 + p) * lda;
        for (int ir = 0; ir < full; ir++)
            for (int v = 0; v < FNN_MV; v++)
                FNN_STORE(dst + (size_t)ir * FNN_MR * kc + p * FNN_MR + FNN_L * v, FNN_LOADU(s + ir * FNN_MR + FNN_L * v));
    }
    if (mc % FNN_MR)
        FNN_N(fnn_own_pack_a)('N', mc - full * FNN_MR, kc, A, lda, i0 + full * FNN_MR, p0,
                              dst + (size_t)full * FNN_MR * kc);
}

/* op(B)[p0:p0+kc, j0:j0+nr] -> one NR-column micro-panel dst[p * NR + c], columns past
 * nr zero; in FNN_NG groups of FNN_L columns (one for float32, two for float64). */
FNN_OWN_TARGET static void FNN_N(fnn_own_pack_b)(char tb, int kc, int nr, const FNN_T *B, int ldb, int p0, int j0,
        FNN_T *dst)
{
    for (int g = 0; g < FNN_NG; g++) {
        int c0 = FNN_L * g;
        FNN_MASK mk_nr = FNN_N(fnn_own_mask)(nr - c0), mk_NR = FNN_N(fnn_own_mask)(FNN_NR - c0);
        if (tb == 'T') {
            const FNN_T *s = B + j0 + c0 + (size_t)p0 * ldb;
            for (int p = 0; p < kc; p++)
                FNN_MASK_STOREU(dst + p * FNN_NR + c0, mk_NR, FNN_MASKZ_LOADU(mk_nr, s + (size_t)p * ldb));
        } else {
            for (int pb = 0; pb < kc; pb += FNN_L) {
                int pl = kc - pb < FNN_L ? kc - pb : FNN_L;
                FNN_MASK mk = FNN_N(fnn_own_mask)(pl);
                FNN_V r[FNN_L];
                for (int q = 0; q < FNN_L; q++)
                    r[q] = c0 + q < nr ? FNN_MASKZ_LOADU(mk, B + (p0 + pb) + (size_t)(j0 + c0 + q) * ldb) : FNN_SETZERO();
                FNN_TRANSPOSE(r);
                for (int q = 0; q < pl; q++)
                    FNN_MASK_STOREU(dst + (pb + q) * FNN_NR + c0, mk_NR, r[q]);
            }
        }
    }
}

/* C[0:MR, 0:nr] = (accum ? C : 0) + Ap (MR x kc) Bp (kc x nr); nr a constant once
 * inlined. With pf, the next micro-panel of B (kc x NR at pf) is fetched into L2 as
 * this one is read, step by step. */
FNN_OWN_TARGET static inline __attribute__((always_inline)) void FNN_N(fnn_own_kernel)(int kc,
        const FNN_T *restrict a, const FNN_T *restrict b, FNN_T *c, int ldc, int accum, const int nr,
        const FNN_T *pf)
{
    FNN_V acc[FNN_MV][FNN_NR];
#pragma GCC unroll 64
    for (int j = 0; j < nr; j++)
#pragma GCC unroll 4
        for (int v = 0; v < FNN_MV; v++)
            acc[v][j] = FNN_SETZERO();
    /* the C tile is written at the end: fetch it for writing meanwhile */
#pragma GCC unroll 64
    for (int j = 0; j < nr; j++)
#pragma GCC unroll 4
        for (int v = 0; v < FNN_MV; v++)
            _m_prefetchw(c + (size_t)j * ldc + FNN_L * v);
#pragma GCC unroll 2
    for (int p = 0; p < kc; p++) {
        FNN_V av[FNN_MV];
#pragma GCC unroll 4
        for (int v = 0; v < FNN_MV; v++)
            av[v] = FNN_LOAD(a + FNN_L * v);
#pragma GCC unroll 64
        for (int j = 0; j < nr; j++) {
            FNN_V bj = FNN_SET1(b[j]);
#pragma GCC unroll 4
            for (int v = 0; v < FNN_MV; v++)
                acc[v][j] = FNN_FMADD(av[v], bj, acc[v][j]);
        }
        if (pf != NULL) {
#pragma GCC unroll 4
            for (size_t q = 0; q < FNN_NR * sizeof(FNN_T); q += 64)
                _mm_prefetch((const char *)pf + q, _MM_HINT_T1);
            pf += FNN_NR;
        }
        a += FNN_MR;
        b += FNN_NR;
    }
#pragma GCC unroll 64
    for (int j = 0; j < nr; j++)
#pragma GCC unroll 4
        for (int v = 0; v < FNN_MV; v++) {
            FNN_T *cj = c + (size_t)j * ldc + FNN_L * v;
            FNN_STOREU(cj, accum ? FNN_ADD(acc[v][j], FNN_LOADU(cj)) : acc[v][j]);
        }
}

#define FNN_OWN_KERNEL(N)                                                                    \
    FNN_OWN_TARGET __attribute__((noinline)) static void FNN_N(fnn_own_kernel_##N)(int kc,  \
            const FNN_T *a, const FNN_T *b, FNN_T *c, int ldc, int accum, const FNN_T *pf)   \
    {                                                                                        \
        if (pf != NULL)                                                                      \
            FNN_N(fnn_own_kernel)(kc, a, b, c, ldc, accum, N, pf);                           \
        else if (accum)                                                                      \
            FNN_N(fnn_own_kernel)(kc, a, b, c, ldc, 1, N, NULL);                             \
        else                                                                                 \
            FNN_N(fnn_own_kernel)(kc, a, b, c, ldc, 0, N, NULL);                             \
    }
FNN_OWN_KERNEL(1) FNN_OWN_KERNEL(2) FNN_OWN_KERNEL(3) FNN_OWN_KERNEL(4) FNN_OWN_KERNEL(5)
FNN_OWN_KERNEL(6) FNN_OWN_KERNEL(7) FNN_OWN_KERNEL(8) FNN_OWN_KERNEL(9) FNN_OWN_KERNEL(10)
FNN_OWN_KERNEL(11) FNN_OWN_KERNEL(12) FNN_OWN_KERNEL(13) FNN_OWN_KERNEL(14)
#undef FNN_OWN_KERNEL
/* kernels by the width of their column panel (FNN_NR: the full one) */
static void (*const FNN_N(fnn_own_kernels)[FNN_NR + 1])(int, const FNN_T *, const FNN_T *, FNN_T *, int, int,
        const FNN_T *) = {
    NULL, FNN_N(fnn_own_kernel_1), FNN_N(fnn_own_kernel_2), FNN_N(fnn_own_kernel_3),
    FNN_N(fnn_own_kernel_4), FNN_N(fnn_own_kernel_5), FNN_N(fnn_own_kernel_6),
    FNN_N(fnn_own_kernel_7), FNN_N(fnn_own_kernel_8), FNN_N(fnn_own_kernel_9),
    FNN_N(fnn_own_kernel_10), FNN_N(fnn_own_kernel_11), FNN_N(fnn_own_kernel_12),
    FNN_N(fnn_own_kernel_13), FNN_N(fnn_own_kernel_14)};

/* A partial row panel (mr < MR): the full kernel into a temporary tile, its mr x nr
 * corner added or stored by the full kernel's instructions (the same FMA chains and
 * the same final add, this block's sum first: the same bits as a full panel's, NaN
 * payloads included). */
FNN_OWN_TARGET static void FNN_N(fnn_own_kernel_edge)(int kc, const FNN_T *a, const FNN_T *b, FNN_T *c, int ldc,
        int accum, int mr, int nr, const FNN_T *pf)
{
    if (mr == FNN_MR) {
        FNN_N(fnn_own_kernels)[nr](kc, a, b, c, ldc, accum, pf);
        return;
    }
    FNN_T tmp[FNN_MR * FNN_NR] __attribute__((aligned(64)));
    FNN_N(fnn_own_kernels)[FNN_NR](kc, a, b, tmp, FNN_MR, 0, pf);
    for (int j = 0; j < nr; j++)
        for (int v = 0; v < FNN_MV && FNN_L * v < mr; v++) {
            FNN_MASK mk = FNN_N(fnn_own_mask)(mr - FNN_L * v);
            FNN_T *cj = c + (size_t)j * ldc + FNN_L * v;
            FNN_V t = FNN_LOAD(tmp + j * FNN_MR + FNN_L * v);
            FNN_MASK_STOREU(cj, mk, accum ? FNN_ADD(t, FNN_MASKZ_LOADU(mk, cj)) : t);
        }
}

/* C = op(A) op(B), column-major, m, n, k >= 1, on the given buffers; op(B) packed
 * here, or already packed whole in `shared` (fnn_own_share's layout). */
FNN_OWN_TARGET static void FNN_N(fnn_own_gemm)(char ta, char tb, int m, int n, int k, const FNN_T *A, int lda,
        const FNN_T *B, int ldb, FNN_T *C, int ldc, FNN_T *abuf, FNN_T *bbuf, const FNN_T *shared)
{
    const size_t npad = (size_t)(n + FNN_NR - 1) / FNN_NR * FNN_NR;
    const int ncb = (FNN_NC / FNN_NR) * FNN_NR;
    for (int jc = 0; jc < n; jc += ncb) {
        int nc = n - jc < ncb ? n - jc : ncb;
        for (int pc = 0; pc < k; pc += FNN_KC) {
            int kc = k - pc < FNN_KC ? k - pc : FNN_KC;
            for (int ic = 0; ic < m; ic += FNN_MC) {
                int mc = m - ic < FNN_MC ? m - ic : FNN_MC;
                if (ta == 'N')
                    FNN_N(fnn_own_pack_a_block)(mc, kc, A, lda, ic, pc, abuf);
                for (int jr = 0; jr < nc; jr += FNN_NR) {
                    int nr = nc - jr < FNN_NR ? nc - jr : FNN_NR;
                    const FNN_T *bp, *next = NULL;
                    if (shared != NULL) {
                        /* read from the shared pack, beyond L2: the first row panel
                         * fetches the next column panel meanwhile */
                        bp = shared + (size_t)pc * npad + (size_t)(jc + jr) * kc;
                        if (jr + FNN_NR < nc)
                            next = bp + (size_t)FNN_NR * kc;
                    } else {
                        FNN_T *own = bbuf + (size_t)jr * kc;
                        if (ic == 0)
                            FNN_N(fnn_own_pack_b)(tb, kc, nr, B, ldb, pc, jc + jr, own);
                        bp = own;
                    }
                    for (int ir = 0; ir < mc; ir += FNN_MR) {
                        int mr = mc - ir < FNN_MR ? mc - ir : FNN_MR;
                        FNN_T *ap = abuf + (size_t)ir * kc;
                        if (jr == 0 && ta != 'N')
                            FNN_N(fnn_own_pack_a)(ta, mr, kc, A, lda, ic + ir, pc, ap);
                        FNN_T *cp = C + (ic + ir) + (size_t)(jc + jr) * ldc;
                        FNN_N(fnn_own_kernel_edge)(kc, ap, bp, cp, ldc, pc > 0, mr, nr, ir == 0 ? next : NULL);
                    }
                }
            }
        }
    }
}

/* This type's shared op(B) (fnn_gemm.h's comment on sharing): one product holds it at a
 * time. */
static struct {
    _Atomic unsigned seq;
    _Atomic int busy;
    _Atomic int chunks_done;
    int chunks, groups; /* chunks: KC blocks x groups of FNN_SHARE_PANELS micro-panels */
    char tb;
    int m, n, k, ldb, ldc; /* the column-major call's: C is m x n */
    const FNN_T *src;      /* op(B)'s operand, while it is being packed */
    const FNN_T *b, *c;    /* published: the operand the tiles read, and C */
    FNN_T *packed; /* KC blocks one after the other, each npad x kc in NR micro-panels */
    size_t cap;
} FNN_N(fnn_own_slot);

/* In a forked child: the slot free, nothing published (its pack stays allocated). */
static void FNN_N(fnn_own_slot_after_fork)(void)
{
    unsigned s = atomic_load_explicit(&FNN_N(fnn_own_slot).seq, memory_order_relaxed);
    FNN_N(fnn_own_slot).b = NULL;
    FNN_N(fnn_own_slot).chunks = 0;
    atomic_store(&FNN_N(fnn_own_slot).chunks_done, 0);
    atomic_store(&FNN_N(fnn_own_slot).seq, (s + 1u) & ~1u);
    atomic_store(&FNN_N(fnn_own_slot).busy, 0);
}

static void FNN_N(fnn_own_publish)(const FNN_T *b)
{
    unsigned s = atomic_load_explicit(&FNN_N(fnn_own_slot).seq, memory_order_relaxed);
    atomic_store_explicit(&FNN_N(fnn_own_slot).seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    FNN_N(fnn_own_slot).b = b;
    atomic_store_explicit(&FNN_N(fnn_own_slot).seq, s + 2, memory_order_release);
}

/* fnn_own_share for this type (see fnn_gemm.h). */
static int FNN_N(fnn_own_share)(int trans_a, int m, int n, int k, const FNN_T *a, int lda, const FNN_T *out,
        int ldc, int narrowest)
{
    int expected = 0;
    if (FNN_N(fnn_own_fallback) == NULL || n < 1 || !fnn_own_takes(narrowest, m, k))
        return 0;
    if (!atomic_compare_exchange_strong(&FNN_N(fnn_own_slot).busy, &expected, 1))
        return 0;
    size_t npad = (size_t)(m + FNN_NR - 1) / FNN_NR * FNN_NR;
    if (npad * k > FNN_N(fnn_own_slot).cap) {
        free(FNN_N(fnn_own_slot).packed);
        FNN_N(fnn_own_slot).packed = (FNN_T *)aligned_alloc(64, (npad * k * sizeof(FNN_T) + 63) / 64 * 64);
        FNN_N(fnn_own_slot).cap = FNN_N(fnn_own_slot).packed ? npad * k : 0;
        if (FNN_N(fnn_own_slot).packed == NULL) {
            atomic_store(&FNN_N(fnn_own_slot).busy, 0);
            return 0;
        }
    }
    int panels = (m + FNN_NR - 1) / FNN_NR;
    FNN_N(fnn_own_slot).groups = (panels + FNN_SHARE_PANELS - 1) / FNN_SHARE_PANELS;
    FNN_N(fnn_own_slot).chunks = (k + FNN_KC - 1) / FNN_KC * FNN_N(fnn_own_slot).groups;
    atomic_store(&FNN_N(fnn_own_slot).chunks_done, 0);
    FNN_N(fnn_own_slot).tb = trans_a ? 'T' : 'N';
    FNN_N(fnn_own_slot).m = n;
    FNN_N(fnn_own_slot).n = m;
    FNN_N(fnn_own_slot).k = k;
    FNN_N(fnn_own_slot).ldb = lda;
    FNN_N(fnn_own_slot).ldc = ldc;
    FNN_N(fnn_own_slot).c = out;
    FNN_N(fnn_own_slot).src = a;
    return FNN_N(fnn_own_slot).chunks;
}

/* fnn_own_share_pack for this type. */
static void FNN_N(fnn_own_share_pack)(int chunk)
{
    if (chunk < 0 || chunk >= FNN_N(fnn_own_slot).chunks)
        return;
    int N = FNN_N(fnn_own_slot).n, K = FNN_N(fnn_own_slot).k;
    size_t npad = (size_t)(N + FNN_NR - 1) / FNN_NR * FNN_NR;
    int pc = chunk / FNN_N(fnn_own_slot).groups * FNN_KC;
    int kc = K - pc < FNN_KC ? K - pc : FNN_KC;
    int j0 = chunk % FNN_N(fnn_own_slot).groups * FNN_SHARE_PANELS * FNN_NR;
    int j1 = j0 + FNN_SHARE_PANELS * FNN_NR < N ? j0 + FNN_SHARE_PANELS * FNN_NR : N;
    for (int jr = j0; jr < j1; jr += FNN_NR)
        FNN_N(fnn_own_pack_b)(FNN_N(fnn_own_slot).tb, kc, N - jr < FNN_NR ? N - jr : FNN_NR, FNN_N(fnn_own_slot).src,
                              FNN_N(fnn_own_slot).ldb, pc, jr,
                              FNN_N(fnn_own_slot).packed + (size_t)pc * npad + (size_t)jr * kc);
    if (atomic_fetch_add(&FNN_N(fnn_own_slot).chunks_done, 1) + 1 == FNN_N(fnn_own_slot).chunks)
        FNN_N(fnn_own_publish)(FNN_N(fnn_own_slot).src);
}

/* fnn_own_unshare for this type. */
static void FNN_N(fnn_own_unshare)(void)
{
    FNN_N(fnn_own_publish)(NULL);
    FNN_N(fnn_own_slot).chunks = 0;
    atomic_store(&FNN_N(fnn_own_slot).busy, 0);
}

/* The shared op(B) for this column-major call, when it is a tile of the holder's
 * product; NULL otherwise. */
static const FNN_T *FNN_N(fnn_own_shared_for)(char tb, int M, int N, int K, const FNN_T *b, int ldb,
        const FNN_T *c, int ldc)
{
    unsigned s = atomic_load_explicit(&FNN_N(fnn_own_slot).seq, memory_order_acquire);
    if (s & 1u)
        return NULL;
    int match = FNN_N(fnn_own_slot).b == b && b != NULL && FNN_N(fnn_own_slot).tb == tb
                && FNN_N(fnn_own_slot).n == N && FNN_N(fnn_own_slot).k == K && FNN_N(fnn_own_slot).ldb == ldb
                && FNN_N(fnn_own_slot).ldc == ldc && (size_t)c >= (size_t)FNN_N(fnn_own_slot).c
                && (size_t)(c + M) <= (size_t)(FNN_N(fnn_own_slot).c + FNN_N(fnn_own_slot).m);
    const FNN_T *packed = FNN_N(fnn_own_slot).packed;
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&FNN_N(fnn_own_slot).seq, memory_order_relaxed) != s)
        return NULL;
    return match ? packed : NULL;
}

/* How many calls of this type read a shared pack since the module loaded: the tests'
 * view of whether the backends share (the bits are the same either way). */
static _Atomic unsigned long FNN_N(fnn_own_shared_calls);

/* BLAS's ?gemm_, column-major (see the top of fnn_gemm.h). */
static void FNN_N(fnn_own_xgemm)(char *transa, char *transb, int *m, int *n, int *k, FNN_T *alpha, FNN_T *a,
        int *lda, FNN_T *b, int *ldb, FNN_T *beta, FNN_T *c, int *ldc)
{
    char ta = fnn_own_trans(transa), tb = fnn_own_trans(transb);
    int M = *m, N = *n, K = *k;
    if (ta && tb && *alpha == 1 && *beta == 0 && fnn_own_takes(M, N, K) && *lda >= (ta == 'N' ? M : K)
        && *ldb >= (tb == 'N' ? K : N) && *ldc >= M) {
        int kc = K < FNN_KC ? K : FNN_KC, mc = M < FNN_MC ? M : FNN_MC;
        int ncb = (FNN_NC / FNN_NR) * FNN_NR, nc = N < ncb ? N : ncb;
        const FNN_T *shared = FNN_N(fnn_own_shared_for)(tb, M, N, K, b, *ldb, c, *ldc);
        struct fnn_own_buffers *buf = fnn_own_buffers_for(
            (size_t)(mc + FNN_MR - 1) / FNN_MR * FNN_MR * kc * sizeof(FNN_T),
            shared ? 0 : (size_t)(nc + FNN_NR - 1) / FNN_NR * FNN_NR * kc * sizeof(FNN_T));
        if (buf != NULL) {
            if (shared != NULL)
                atomic_fetch_add_explicit(&FNN_N(fnn_own_shared_calls), 1, memory_order_relaxed);
            FNN_N(fnn_own_gemm)(ta, tb, M, N, K, a, *lda, b, *ldb, c, *ldc, (FNN_T *)buf->a, (FNN_T *)buf->b,
                                shared);
            return;
        }
    }
    FNN_N(fnn_own_fallback)(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/* this type's macros, fastnn_gemm.h's and this file's: the next type defines its own */
#undef FNN_MV
#undef FNN_NG
#undef FNN_T
#undef FNN_V
#undef FNN_L
#undef FNN_MASK
#undef FNN_MR
#undef FNN_MC
#undef FNN_KC
#undef FNN_N
#undef FNN_GEMM_FN
#undef FNN_SETZERO
#undef FNN_LOAD
#undef FNN_LOADU
#undef FNN_MASKZ_LOADU
#undef FNN_STORE
#undef FNN_STOREU
#undef FNN_MASK_STOREU
#undef FNN_SET1
#undef FNN_FMADD
#undef FNN_ADD
#undef FNN_TRANSPOSE
