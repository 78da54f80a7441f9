/* A packed, single-threaded AVX-512 float32 GEMM in the Goto/BLIS structure: the
 * measurement behind "a GEMM of fastnn's own" in the performance issue (issue 14).
 * benchmarks/packed_gemm.py builds it (-O3 -march=native) and times it against the
 * OpenBLAS instance fastnn's products run on; it is not part of fastnn.
 *
 * packed_sgemm: column-major C (m x n) = op(A) (m x k) op(B) (k x n), alpha 1, beta 0,
 * ta, tb 'N' or 'T' (the calls fastnn makes), any leading dimensions.
 *   Blocking (BLIS loop order jc, pc, ic, jr, ir): NC columns of C, KC of the inner
 *   dimension (C accumulates over the KC blocks in order, so an element's sum never
 *   depends on m, n or where the element lies), MC rows.
 *   op(A)'s MC x KC block is packed into MR-row micro-panels (untransposed A: the whole
 *   block before use; transposed A: each micro-panel at its first use, by 16 x 16
 *   register transposes); op(B) into NR-column micro-panels, each packed just before
 *   its first use, so that it is still in L1/L2 when the kernel reads it.
 *   Micro-kernel MR 32 x NR 14: 28 zmm accumulators, per k step 2 loads of packed A,
 *   14 broadcasts of packed B, 28 FMAs; the last, narrower column panel has kernels of
 *   its exact width; a partial row panel goes through a temporary tile (slow, correct).
 * The packing buffers are static: one thread at a time. */
#include <immintrin.h>
#include <stdlib.h>

#ifndef MR
#define MR 32
#endif
#ifndef NR
#define NR 14
#endif
#ifndef MC
#define MC 256
#endif
#ifndef KC
#define KC 512
#endif
#ifndef NC
#define NC 4096
#endif
#define MV (MR / 16)
#define PFC 1 /* prefetch the C tile for writing at kernel entry */

int packed_sgemm_config(int i) {
  int v[5] = {MR, NR, MC, KC, NC};
  return v[i];
}

/* Timing only: when set, calls skip the packing and read the panels the previous call
 * left (wrong results unless it was the same call on operands of at most MC rows): the
 * kernels' time alone. */
static int reuse_packing = 0;
void packed_sgemm_reuse_packing(int v) { reuse_packing = v; }

static float *Abuf = 0, *Bbuf = 0;
static size_t Acap = 0, Bcap = 0;
static float *grow(float *p, size_t *cap, size_t need) {
  if (need <= *cap) return p;
  free(p);
  p = (float *)aligned_alloc(64, ((need * 4 + 63) / 64) * 64);
  *cap = p ? need : 0;
  return p;
}

static inline void tr16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; i++) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; i++) {
    __m512d t0 = _mm512_castps_pd(t[4 * i]), t1 = _mm512_castps_pd(t[4 * i + 1]);
    __m512d t2 = _mm512_castps_pd(t[4 * i + 2]), t3 = _mm512_castps_pd(t[4 * i + 3]);
    u[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
    u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
    u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
    u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
  }
  for (int c = 0; c < 4; c++) {
    __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);
    __m512 v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xdd);
    __m512 w0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
    __m512 w1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xdd);
    r[c] = _mm512_shuffle_f32x4(v0, w0, 0x88);
    r[8 + c] = _mm512_shuffle_f32x4(v0, w0, 0xdd);
    r[4 + c] = _mm512_shuffle_f32x4(v1, w1, 0x88);
    r[12 + c] = _mm512_shuffle_f32x4(v1, w1, 0xdd);
  }
}
static inline __mmask16 lmask(int n) { return n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1); }

/* Pack op(A)[i0:i0+mc, p0:p0+kc] into MR-row micro-panels: dst[panel*kc*MR + p*MR + r]. */
static void packA(char ta, int mc, int kc, const float *A, int lda, int i0, int p0, float *dst) {
  for (int ir = 0; ir < mc; ir += MR) {
    float *d = dst + (size_t)ir * kc;
    int mr = mc - ir < MR ? mc - ir : MR;
    if (ta == 'N') {
      const float *s = A + (i0 + ir) + (size_t)p0 * lda;
      if (mr == MR) {
        for (int p = 0; p < kc; p++) {
          for (int v = 0; v < MV; v++) _mm512_store_ps(d + p * MR + 16 * v, _mm512_loadu_ps(s + (size_t)p * lda + 16 * v));
        }
      } else {
        for (int p = 0; p < kc; p++)
          for (int v = 0; v < MV; v++) {
            int rem = mr - 16 * v;
            __mmask16 mk = rem <= 0 ? 0 : lmask(rem);
            _mm512_store_ps(d + p * MR + 16 * v, _mm512_maskz_loadu_ps(mk, s + (size_t)p * lda + 16 * v));
          }
      }
    } else { /* op(A)(i,p) = A[p + i*lda] */
      for (int v = 0; v < MV; v++) {
        int rows = mr - 16 * v; if (rows > 16) rows = 16;
        for (int pb = 0; pb < kc; pb += 16) {
          int pl = kc - pb < 16 ? kc - pb : 16;
          __mmask16 mk = lmask(pl);
          __m512 r[16];
          for (int q = 0; q < 16; q++)
            r[q] = q < rows ? _mm512_maskz_loadu_ps(mk, A + (p0 + pb) + (size_t)(i0 + ir + 16 * v + q) * lda) : _mm512_setzero_ps();
          tr16(r);
          for (int q = 0; q < pl; q++) _mm512_store_ps(d + (pb + q) * MR + 16 * v, r[q]);
        }
      }
    }
  }
}

/* micro-kernel: C[0:MR,0:nr] (+)= Ap(MR x kc) * Bp(kc x NR-stride panel), nr a compile-time constant after inlining */
static inline __attribute__((always_inline)) void kernel_g(int kc, const float *restrict a, const float *restrict b, float *c, int ldc, int accum, const int nr) {
  __m512 acc[MV][NR];
#pragma GCC unroll 64
  for (int j = 0; j < nr; j++)
#pragma GCC unroll 4
    for (int v = 0; v < MV; v++) acc[v][j] = _mm512_setzero_ps();
#if PFC
#pragma GCC unroll 64
  for (int j = 0; j < nr; j++)
#pragma GCC unroll 4
    for (int v = 0; v < MV; v++) _m_prefetchw(c + (size_t)j * ldc + 16 * v);
#endif
#pragma GCC unroll 2
  for (int p = 0; p < kc; p++) {
    __m512 av[MV];
#pragma GCC unroll 4
    for (int v = 0; v < MV; v++) av[v] = _mm512_load_ps(a + 16 * v);
#pragma GCC unroll 64
    for (int j = 0; j < nr; j++) {
      __m512 bj = _mm512_set1_ps(b[j]);
#pragma GCC unroll 4
      for (int v = 0; v < MV; v++) acc[v][j] = _mm512_fmadd_ps(av[v], bj, acc[v][j]);
    }
    a += MR; b += NR;
  }
  if (accum) {
#pragma GCC unroll 64
    for (int j = 0; j < nr; j++)
#pragma GCC unroll 4
      for (int v = 0; v < MV; v++) _mm512_storeu_ps(c + (size_t)j * ldc + 16 * v, _mm512_add_ps(acc[v][j], _mm512_loadu_ps(c + (size_t)j * ldc + 16 * v)));
  } else {
#pragma GCC unroll 64
    for (int j = 0; j < nr; j++)
#pragma GCC unroll 4
      for (int v = 0; v < MV; v++) _mm512_storeu_ps(c + (size_t)j * ldc + 16 * v, acc[v][j]);
  }
}
#define kernel(kc, a, b, c, ldc, accum) kernel_g(kc, a, b, c, ldc, accum, NR)
__attribute__((noinline)) static void kernel_full0(int kc, const float *a, const float *b, float *c, int ldc) { kernel(kc, a, b, c, ldc, 0); }
__attribute__((noinline)) static void kernel_full1(int kc, const float *a, const float *b, float *c, int ldc) { kernel(kc, a, b, c, ldc, 1); }

#define KE(N) __attribute__((noinline)) static void ke##N(int kc, const float *a, const float *b, float *c, int ldc, int acc) { if (N < NR) { if (acc) kernel_g(kc, a, b, c, ldc, 1, N < NR ? N : 1); else kernel_g(kc, a, b, c, ldc, 0, N < NR ? N : 1); } }
KE(1) KE(2) KE(3) KE(4) KE(5) KE(6) KE(7) KE(8) KE(9) KE(10) KE(11) KE(12) KE(13) KE(14) KE(15)
typedef void (*kefn)(int, const float *, const float *, float *, int, int);
static const kefn ketab[16] = {0, ke1, ke2, ke3, ke4, ke5, ke6, ke7, ke8, ke9, ke10, ke11, ke12, ke13, ke14, ke15};

static void kernel_edge(int kc, const float *a, const float *b, float *c, int ldc, int accum, int mr, int nr) {
  if (mr == MR && nr < NR && nr < 16) { ketab[nr](kc, a, b, c, ldc, accum); return; }
  float tmp[MR * NR] __attribute__((aligned(64)));
  kernel_full0(kc, a, b, tmp, MR);
  for (int j = 0; j < nr; j++)
    for (int i = 0; i < mr; i++) {
      if (accum) c[i + (size_t)j * ldc] += tmp[i + j * MR];
      else c[i + (size_t)j * ldc] = tmp[i + j * MR];
    }
}

/* Pack one NR-column micro-panel of op(B)[p0:p0+kc, j0:j0+nr] into dst[p*NR + c] (zero-padded). */
static void packB_panel(char tb, int kc, int nr, const float *B, int ldb, int p0, int j0, float *dst) {
  __mmask16 mk_nr = lmask(nr), mk_NR = lmask(NR);
  if (tb == 'T') {
    const float *s = B + j0 + (size_t)p0 * ldb;
    if (nr == NR) {
      for (int p = 0; p < kc; p++) _mm512_mask_storeu_ps(dst + p * NR, mk_NR, _mm512_maskz_loadu_ps(mk_NR, s + (size_t)p * ldb));
    } else {
      for (int p = 0; p < kc; p++) _mm512_mask_storeu_ps(dst + p * NR, mk_NR, _mm512_maskz_loadu_ps(mk_nr, s + (size_t)p * ldb));
    }
  } else {
    for (int pb = 0; pb < kc; pb += 16) {
      int pl = kc - pb < 16 ? kc - pb : 16;
      __mmask16 mk = lmask(pl);
      __m512 r[16];
      for (int q = 0; q < 16; q++)
        r[q] = q < nr ? _mm512_maskz_loadu_ps(mk, B + (p0 + pb) + (size_t)(j0 + q) * ldb) : _mm512_setzero_ps();
      tr16(r);
      for (int q = 0; q < pl; q++) _mm512_mask_storeu_ps(dst + (pb + q) * NR, mk_NR, r[q]);
    }
  }
}
/* N-case A, whole MC x KC block, p-outer: reads mc contiguous floats per column p. */
static void packA_N_block(int mc, int kc, const float *A, int lda, int i0, int p0, float *dst) {
  int full = mc / MR;
  for (int p = 0; p < kc; p++) {
    const float *s = A + i0 + (size_t)(p0 + p) * lda;
    for (int ir = 0; ir < full; ir++)
      for (int v = 0; v < MV; v++) _mm512_store_ps(dst + (size_t)ir * MR * kc + p * MR + 16 * v, _mm512_loadu_ps(s + ir * MR + 16 * v));
  }
  if (mc % MR) packA('N', mc - full * MR, kc, A, lda, i0 + full * MR, p0, dst + (size_t)full * MR * kc);
}

void packed_sgemm(char ta, char tb, int m, int n, int k, const float *A, int lda,
                  const float *B, int ldb, float *C, int ldc) {
  const int NCb = (NC / NR) * NR;
  int kcmax = k < KC ? k : KC;
  int mcmax = m < MC ? m : MC;
  int ncmax = n < NCb ? n : NCb;
  if (m <= 0 || n <= 0) return;
  if (k <= 0) { /* beta 0: C = 0 */
    for (int j = 0; j < n; j++)
      for (int i = 0; i < m; i++) C[i + (size_t)j * ldc] = 0.f;
    return;
  }
  Abuf = grow(Abuf, &Acap, (size_t)((mcmax + MR - 1) / MR) * MR * kcmax);
  Bbuf = grow(Bbuf, &Bcap, (size_t)((ncmax + NR - 1) / NR) * NR * kcmax);
  if (!Abuf || !Bbuf) abort(); /* a benchmark: no silent wrong product */
  int pack = !reuse_packing;
  for (int jc = 0; jc < n; jc += NCb) {
    int nc = n - jc < NCb ? n - jc : NCb;
    for (int pc = 0; pc < k; pc += KC) {
      int kc = k - pc < KC ? k - pc : KC;
      for (int ic = 0; ic < m; ic += MC) {
        int mc = m - ic < MC ? m - ic : MC;
        if (ta == 'N' && pack) packA_N_block(mc, kc, A, lda, ic, pc, Abuf);
        for (int jr = 0; jr < nc; jr += NR) {
          int nr = nc - jr < NR ? nc - jr : NR;
          float *bp = Bbuf + (size_t)jr * kc;
          if (ic == 0 && pack) packB_panel(tb, kc, nr, B, ldb, pc, jc + jr, bp);
          for (int ir = 0; ir < mc; ir += MR) {
            int mr = mc - ir < MR ? mc - ir : MR;
            float *ap = Abuf + (size_t)ir * kc;
            if (jr == 0 && ta != 'N' && pack) packA(ta, mr, kc, A, lda, ic + ir, pc, ap);
            float *cp = C + (ic + ir) + (size_t)(jc + jr) * ldc;
            if (mr == MR && nr == NR) {
              if (pc) kernel_full1(kc, ap, bp, cp, ldc); else kernel_full0(kc, ap, bp, cp, ldc);
            } else kernel_edge(kc, ap, bp, cp, ldc, pc > 0, mr, nr);
          }
        }
      }
    }
  }
}
