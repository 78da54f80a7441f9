/*
 * Hot elementwise loops of fastnn's Cython kernels, compiled once per instruction set.
 *
 * Wheels are built for baseline x86-64 (SSE2). With GCC's (or Clang's) target_clones,
 * each function below is also compiled for AVX2 and AVX-512F, and the dynamic loader
 * picks the widest version the CPU supports (an ifunc, resolved once at load time).
 *
 * The versions give identical results: the loops are elementwise, and the two that
 * accumulate (db over the rows of a batch, the squared norm's eight partial sums) keep
 * each sum's order, the vector lanes running across independent sums, never along one.
 * Every operation is an IEEE add, multiply, divide or square root, correctly rounded
 * at any vector width, and setup.py builds with -ffp-contract=off (no FMA) and without
 * fast-math (no reassociation, NaN checks kept); the "avx2" and "avx512f" targets do
 * not even enable FMA instructions. tests/kernels/test_cython_smoke.py compares the
 * versions bit for bit.
 *
 * Scalars arrive already rounded to the array dtype by the Cython caller (each
 * hyperparameter expression in double, cast once); the array arithmetic follows the
 * reference's order (fastnn/reference/optimizers.py, dense.py). Each function exists
 * for float (_f32) and double (_f64), generated from one macro.
 */
#ifndef FASTNN_SIMD_H
#define FASTNN_SIMD_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Multiversioning needs ifunc support: ELF on x86-64 with GCC or Clang. Defining
 * FNN_CLONES (empty) before including this header builds a single version for the
 * compiler's own -m flags instead (tests compare the versions that way). */
#ifndef FNN_CLONES
#  if defined(__x86_64__) && defined(__ELF__) && defined(__GNUC__) && defined(__has_attribute)
#    if __has_attribute(target_clones)
#      define FNN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#    endif
#  endif
#endif
#ifndef FNN_CLONES
#  define FNN_CLONES
#endif

#define FNN_UNUSED __attribute__((unused))

/* --- optimizers: one in-place pass over flat buffers of n values ------------------- */

/* g = grad + wd param (when decay); param -= lr g. */
#define FNN_SGD(T, S)                                                                  \
    FNN_CLONES FNN_UNUSED static void fnn_sgd_##S(T *param, const T *grad, ptrdiff_t n, \
                                                  T lr, T wd, int decay)               \
    {                                                                                  \
        for (ptrdiff_t i = 0; i < n; i++) {                                            \
            T g = grad[i];                                                             \
            if (decay) g = g + wd * param[i];                                          \
            param[i] = param[i] - lr * g;                                              \
        }                                                                              \
    }

/* v = beta v + keep g; param -= lr v (momentum) or lr (g + beta v) (nesterov).
 * Blocks whose velocity holds a subnormal: still lanes (g == 0, v zero or subnormal,
 * |p| above the bound of a step of lr 2^emin_normal) as in Adam below. */
#define FNN_MOMENTUM(T, S, U, MANT, TINY)                                              \
    FNN_CLONES FNN_UNUSED static void fnn_momentum_##S(                                \
        T *param, const T *grad, T *velocity, ptrdiff_t n, T lr, T beta, T keep, T wd, \
        int decay, int nesterov)                                                       \
    {                                                                                  \
        const U mag = ~((U)1 << (sizeof(U) * 8 - 1)), normal = (U)1 << MANT;          \
        T pmin = INFINITY;                                                             \
        /* +0 <= beta <= 1 and keep >= +0: fl(beta v) + keep g has v's and g's signs */ \
        if (!signbit(beta) && beta <= 1 && !signbit(keep) && keep >= 0                \
            && isfinite(keep))                                                         \
            pmin = fnn_still_pmin_##S(2.0 * fabs((double)lr), 1.0);                    \
        for (ptrdiff_t i0 = 0, i1; i0 < n; i0 = i1) {                                  \
            if (!fnn_still_run_##S(velocity, i0, n, &i1, 1)) {                         \
                for (ptrdiff_t i = i0; i < i1; i++) {                                  \
                    T g = grad[i];                                                     \
                    if (decay) g = g + wd * param[i];                                  \
                    T v = beta * velocity[i] + keep * g;                               \
                    velocity[i] = v;                                                   \
                    if (nesterov)                                                      \
                        param[i] = param[i] - lr * (g + beta * v);                     \
                    else                                                               \
                        param[i] = param[i] - lr * v;                                  \
                }                                                                      \
                continue;                                                              \
            }                                                                          \
            for (ptrdiff_t i = i0; i < i1; i++) {                                      \
                T p = param[i];                                                        \
                T g = grad[i];                                                         \
                if (decay) g = g + wd * p;                                             \
                U vb;                                                                  \
                memcpy(&vb, &velocity[i], sizeof(U));                                  \
                int still = g == 0 && (vb & mag) < normal && (p > pmin || p < -pmin);  \
                T v_in = still ? (T)0 : velocity[i];                                   \
                T v = beta * v_in + keep * g;                                          \
                T upd = nesterov ? p - lr * (g + beta * v) : p - lr * v;               \
                T vt = fnn_still_decay_##S(velocity[i], beta, g); /* keep g: g's 0 */  \
                velocity[i] = still ? vt : v;                                          \
                param[i] = upd; /* p in a still lane: its step is a zero */           \
            }                                                                          \
        }                                                                              \
    }

/* s = rho s + rest g^2 (rmsprop) or s + g^2 (adagrad, rmsprop = 0);
 * param -= lr g / (sqrt(s) + eps), or lr g / sqrt(s + eps) when inside.
 * RMSProp's blocks whose s holds a subnormal: in the still lanes (g == 0, s >= 0 zero or
 * subnormal) the arithmetic sees s = 0 and s becomes fl(rho s) by integer rounding; p
 * takes the plain formula's value, whose step lr g / denom is a zero for finite lr and
 * any denom > 0 (eps > 0 makes it so). Adagrad's sum never decays: the plain loop. */
#define FNN_ADAPTIVE(T, S, SQRT, U, MANT)                                              \
    FNN_CLONES FNN_UNUSED static void fnn_adaptive_##S(                                \
        T *param, const T *grad, T *sq, ptrdiff_t n, T lr, T rho, T rest, T eps, T wd, \
        int decay, int inside, int rmsprop)                                            \
    {                                                                                  \
        const U mag = ~((U)1 << (sizeof(U) * 8 - 1)), normal = (U)1 << MANT;          \
        /* +0 <= rho <= 1 and rest >= +0: fl(rho s) + rest g^2 is fl(rho s) + +0 */     \
        int stills = rmsprop && !signbit(rho) && rho <= 1 && !signbit(rest)            \
                     && rest >= 0 && isfinite(lr) && eps > 0;                          \
        for (ptrdiff_t i0 = 0, i1; i0 < n; i0 = i1) {                                  \
            if (!fnn_still_run_##S(sq, i0, n, &i1, stills)) {                          \
                for (ptrdiff_t i = i0; i < i1; i++) {                                  \
                    T g = grad[i];                                                     \
                    if (decay) g = g + wd * param[i];                                  \
                    T s;                                                               \
                    if (rmsprop)                                                       \
                        s = rho * sq[i] + rest * (g * g);                              \
                    else                                                               \
                        s = sq[i] + g * g;                                             \
                    sq[i] = s;                                                         \
                    T denom = inside ? SQRT(s + eps) : SQRT(s) + eps;                  \
                    param[i] = param[i] - lr * g / denom;                              \
                }                                                                      \
                continue;                                                              \
            }                                                                          \
            for (ptrdiff_t i = i0; i < i1; i++) {                                      \
                T g = grad[i];                                                         \
                if (decay) g = g + wd * param[i];                                      \
                U sb;                                                                  \
                memcpy(&sb, &sq[i], sizeof(U));                                        \
                int still = g == 0 && (sb & mag) < normal && sq[i] >= 0;               \
                T s = rho * (still ? (T)0 : sq[i]) + rest * (g * g);                   \
                T denom = inside ? SQRT(s + eps) : SQRT(s) + eps;                      \
                param[i] = param[i] - lr * g / denom;                                  \
                T st = fnn_still_decay_##S(sq[i], rho, (T)0); /* rest g^2: +0 */       \
                sq[i] = still ? st : s;                                                \
            }                                                                          \
        }                                                                              \
    }

/* Subnormal moments. A gradient that stays exactly 0 (a unit that no longer fires)
 * decays m by b1 and v by b2 each step into the subnormal range, where rounding to
 * nearest keeps the smallest values for good (fl(0.9 * 4 * 2^-149) = 4 * 2^-149). On
 * Intel cores every vector instruction that reads or makes a subnormal takes a microcode
 * assist of a hundred cycles or more: such lanes made Adam most of config A's step and
 * doubled a digits epoch. A block of values whose m holds a subnormal (v decays 100
 * times slower, so it follows m there) therefore runs a second loop in which the
 * "still" lanes (g == 0, m zero or subnormal, v >= 0, |p| large enough that the step
 * cannot move it) keep subnormals out of the arithmetic and get the same bits by
 * integer means: m = +-k 2^emin, so fl(b1 m) = +-rint(b1 k) 2^emin
 * (round half to even; b1 k < 2^MANT stays on the subnormal grid). The product b1 k is
 * exact in double for float; for double, Dekker's two-product error breaks a tie that
 * rounding the product made. The update of a still lane is at most
 * 2 lr 2^emin_normal / (corr1 eps) in size, below half the spacing of the floats
 * around p when |p| > pmin, so p - update == p. */
/* 256: the first look over m costs nothing measurable on 1e7 values (64 cost 9%, 1024 15%:
 * the look and the update then stream their arrays apart). */
#define FNN_STILL_BLOCK 256
#define FNN_STILL_SUB 32
#define FNN_SUB_ROUND(prod) (((prod) + 4503599627370496.0) - 4503599627370496.0) /* 2^52 */

FNN_UNUSED static inline double fnn_two_product_err(double a, double b, double prod)
{
    double c = 134217729.0 * a, ah = c - (c - a), al = a - ah;  /* 2^27 + 1 */
    double d = 134217729.0 * b, bh = d - (d - b), bl = b - bh;
    return ((ah * bh - prod) + ah * bl + al * bh) + al * bl;
}

/* rint(b k) for 0 <= k < 2^52 and 0 <= b <= 1, half to even, exactly. */
FNN_UNUSED static inline double fnn_scaled_count_f32(double k, double b)
{
    return FNN_SUB_ROUND(b * k); /* b k exact: 24 + 23 bits */
}
FNN_UNUSED static inline double fnn_scaled_count_f64(double k, double b)
{
    double prod = b * k, r = FNN_SUB_ROUND(prod), err = fnn_two_product_err(b, k, prod);
    /* the exact side of a tie; selects, not branches, so that the still loops vectorise */
    double tie = err > 0.0 ? prod + 0.5 : err < 0.0 ? prod - 0.5 : r;
    return fabs(prod - r) != 0.5 ? r : tie;
}

/* A count k (a float's fraction bits) as a double and back. float32's: plain
 * conversions. float64's (0 <= k < 2^52) through the bits of 2^52 + k: vector units
 * before AVX-512DQ have no conversion between 64-bit integers and doubles, and one such
 * conversion kept the float64 still loops scalar. */
FNN_UNUSED static inline double fnn_count_to_double_f32(uint32_t k) { return (double)k; }
FNN_UNUSED static inline uint32_t fnn_double_to_count_f32(double r) { return (uint32_t)r; }
FNN_UNUSED static inline double fnn_count_to_double_f64(uint64_t k)
{
    double d;
    k |= 0x4330000000000000ULL; /* the bits of 2^52 */
    memcpy(&d, &k, sizeof d);
    return d - 4503599627370496.0;
}
FNN_UNUSED static inline uint64_t fnn_double_to_count_f64(double r)
{
    uint64_t k;
    r += 4503599627370496.0;
    memcpy(&k, &r, sizeof k);
    return k & 0x000FFFFFFFFFFFFFULL;
}

/* fl(b x) + z for x zero or subnormal, 0 <= b <= 1 and z = +-0 (the term a zero
 * gradient adds), by integer rounding: never a subnormal operation. */
#define FNN_STILL_DECAY(T, S, U, MANT)                                                 \
    FNN_UNUSED static inline T fnn_still_decay_##S(T x, T b, T z)                      \
    {                                                                                  \
        const U sign = (U)1 << (sizeof(U) * 8 - 1), frac = ((U)1 << MANT) - 1;         \
        U xb, zb, r;                                                                   \
        T out;                                                                         \
        memcpy(&xb, &x, sizeof(U));                                                    \
        memcpy(&zb, &z, sizeof(U));                                                    \
        r = fnn_double_to_count_##S(                                                   \
            fnn_scaled_count_##S(fnn_count_to_double_##S(xb & frac), (double)b));      \
        r = r ? r | (xb & sign) : (xb & zb & sign);                                    \
        memcpy(&out, &r, sizeof(U));                                                   \
        return out;                                                                    \
    }

/* Whether x[i0 .. i1) holds a subnormal (integer tests on the bits: no assist). */
#define FNN_ANY_SUBNORMAL(T, S, U, MANT)                                               \
    FNN_UNUSED static inline int fnn_any_subnormal_##S(const T *x, ptrdiff_t i0,       \
                                                       ptrdiff_t i1)                   \
    {                                                                                  \
        const U mag = ~((U)1 << (sizeof(U) * 8 - 1)), frac = ((U)1 << MANT) - 1;      \
        int any = 0;                                                                   \
        for (ptrdiff_t i = i0; i < i1; i++) {                                          \
            U b;                                                                       \
            memcpy(&b, &x[i], sizeof(U));                                              \
            any |= (b & mag) - 1 < frac;                                               \
        }                                                                              \
        return any;                                                                    \
    }

/* The optimizer loops' next run from i0 (before n), at most FNN_STILL_BLOCK values
 * long, in steps of FNN_STILL_SUB: the steps holding a subnormal in x from i0 on
 * (returns 1, the still loop's run), else the values up to the next step holding one
 * (returns 0, the plain loop's run). So a lone subnormal sends only its own
 * FNN_STILL_SUB values to the slower still loop, a block full of them runs it whole,
 * and each value is looked at once or twice. look = 0: plain runs of FNN_STILL_BLOCK. */
#define FNN_STILL_RUN(T, S)                                                            \
    FNN_UNUSED static inline int fnn_still_run_##S(const T *x, ptrdiff_t i0, ptrdiff_t n, \
                                                   ptrdiff_t *i1, int look)            \
    {                                                                                  \
        ptrdiff_t end = n - i0 < FNN_STILL_BLOCK ? n : i0 + FNN_STILL_BLOCK, j;        \
        ptrdiff_t first = end - i0 < FNN_STILL_SUB ? end : i0 + FNN_STILL_SUB;         \
        int still = look && fnn_any_subnormal_##S(x, i0, first);                       \
        if (!look || (!still && !fnn_any_subnormal_##S(x, first, end))) {              \
            *i1 = end; /* a plain block: one look over it */                           \
            return 0;                                                                  \
        }                                                                              \
        /* the run goes on while the steps are of the first one's kind */              \
        for (j = first; j < end; j += FNN_STILL_SUB)                                   \
            if (fnn_any_subnormal_##S(x, j, end - j < FNN_STILL_SUB ? end : j + FNN_STILL_SUB) \
                != still)                                                              \
                break;                                                                 \
        *i1 = j < end ? j : end;                                                       \
        return still;                                                                  \
    }

/* The smallest |p| that a step of at most bound = step TINY / den cannot move (p - d == p
 * for |d| <= bound, below half the spacing of the floats next to p, >= |p| 2^-(MANT + 2));
 * infinity when no such bound is known. step / den first, then the power of two TINY
 * 2^(MANT + 3): no intermediate underflows while the bound matters (step TINY alone is
 * subnormal in double for ordinary rates, a microcode assist, and 0 for tiny ones, which
 * made the bound too small), and an overflow gives infinity (no still lanes). The larger
 * of big and TINY is a select, not libm's fmax: its legacy SSE code, called from an
 * AVX-512 clone with the vector registers' upper halves in use, took ~120 ns a call on an
 * AVX-512 host (7% of an Adam update over 771 values). */
#define FNN_STILL_PMIN(T, S, MANT, TINY)                                               \
    FNN_UNUSED static inline T fnn_still_pmin_##S(double step, double den)             \
    {                                                                                  \
        double big = step / den * ldexp((double)TINY, MANT + 3);                       \
        return big < 1e300 ? (T)(big > TINY ? big : TINY) : (T)INFINITY;               \
    }

/* x / c for a divisor 0 < c <= 1 fixed over a loop (Adam's bias corrections), inv =
 * 1.0 / (double)c: the same bits as the division (docs/spec.md §5, "Quotients by the
 * bias corrections"; above 1, an exact tie between subnormals may not). For float, the
 * double product x inv rounded once to float: it lies within 2^-52 |x / c| of the
 * quotient, while x / c, when not itself a float, lies at least 2^-49 |x / c| from
 * every rounding boundary of float (midpoints between floats, the subnormal ones and
 * the overflow threshold included) and, for c <= 1, never on one, so both round
 * alike; a float divider takes several times as long as the product on x86 cores.
 * For double, the division itself. */
FNN_UNUSED static inline float fnn_div_by_f32(float x, float c, double inv)
{
    (void)c;
    return (float)((double)x * inv);
}
FNN_UNUSED static inline double fnn_div_by_f64(double x, double c, double inv)
{
    (void)inv;
    return x / c;
}

/* Adam's plain loop on [i0, i1). unit1, unit2: corr1, corr2 equal 1, so that m / corr1
 * is m and v / corr2 is v exactly (1 - beta^t rounds to 1 once beta^t is at most half
 * the spacing of the floats just below 1: from step 165 for beta1 = 0.9 in float, 356
 * in double). They are constants where it is inlined, so each case gets its own loop,
 * without the quotient's conversions (a float Adam's loop is bound as much by them as
 * by its divider). fnn_adam makes the loops for corr1 = 1, alone or with corr2 = 1
 * (corr2 reaches 1 after corr1 when beta2 >= beta1); corr2 = 1 alone takes the general
 * one, with the same values. */
#define FNN_ADAM_PLAIN(T, S, SQRT)                                                     \
    FNN_UNUSED static inline __attribute__((always_inline)) void fnn_adam_plain_##S(   \
        T *param, const T *grad, T *m, T *v, ptrdiff_t i0, ptrdiff_t i1, T lr, T b1,   \
        T b2, T rest1, T rest2, T corr1, T corr2, double inv1, double inv2, T eps,     \
        T wd, T shrink, int decay, int decoupled, int unit1, int unit2)               \
    {                                                                                  \
        for (ptrdiff_t i = i0; i < i1; i++) {                                          \
            T p = param[i];                                                            \
            if (decoupled) p = p - shrink * p;                                         \
            T g = grad[i];                                                             \
            if (decay) g = g + wd * p;                                                 \
            T mi = b1 * m[i] + rest1 * g;                                              \
            T vi = b2 * v[i] + rest2 * (g * g);                                        \
            m[i] = mi;                                                                 \
            v[i] = vi;                                                                 \
            T mh = unit1 ? mi : fnn_div_by_##S(mi, corr1, inv1);                       \
            T vh = unit2 ? vi : fnn_div_by_##S(vi, corr2, inv2);                       \
            param[i] = p - lr * mh / (SQRT(vh) + eps);                                 \
        }                                                                              \
    }

/* fnn_adam's arguments to fnn_adam_plain, but for the two flags */
#define FNN_ADAM_PLAIN_ARGS                                                            \
    param, grad, m, v, i0, i1, lr, b1, b2, rest1, rest2, corr1, corr2, inv1, inv2, eps, \
        wd, shrink, decay, decoupled

/* Adam: m = b1 m + rest1 g; v = b2 v + rest2 g^2;
 * param -= lr (m / corr1) / (sqrt(v / corr2) + eps). decay adds wd param to g (L2);
 * decoupled (AdamW) first takes p = param - shrink param and uses p from then on.
 * U: the unsigned integer of T's bits, MANT: T's fraction bits, TINY: its smallest
 * normal. */
#define FNN_ADAM(T, S, SQRT, U, MANT, TINY)                                            \
    FNN_CLONES FNN_UNUSED static void fnn_adam_##S(                                    \
        T *param, const T *grad, T *m, T *v, ptrdiff_t n, T lr, T b1, T b2, T rest1,   \
        T rest2, T corr1, T corr2, T eps, T wd, T shrink, int decay, int decoupled)    \
    {                                                                                  \
        const U mag = ~((U)1 << (sizeof(U) * 8 - 1)), normal = (U)1 << MANT;          \
        const U frac = normal - 1;                                                     \
        T pmin = INFINITY; /* |update| <= 2 lr TINY / (corr1 eps) in a still lane */   \
        if (eps > 0 && corr1 > 0 && corr2 > 0 && !signbit(b1) && b1 <= 1              \
            && !signbit(b2) && b2 <= 1)                                                \
            pmin = fnn_still_pmin_##S(2.0 * fabs((double)lr),                          \
                                      (double)corr1 * (double)eps);                    \
        const double inv1 = 1.0 / (double)corr1, inv2 = 1.0 / (double)corr2;           \
        const int unit1 = corr1 == 1, unit2 = corr2 == 1;                              \
        for (ptrdiff_t i0 = 0, i1; i0 < n; i0 = i1) {                                  \
            if (!fnn_still_run_##S(m, i0, n, &i1, 1)) {                                \
                if (unit1 && unit2)                                                    \
                    fnn_adam_plain_##S(FNN_ADAM_PLAIN_ARGS, 1, 1);                     \
                else if (unit1)                                                        \
                    fnn_adam_plain_##S(FNN_ADAM_PLAIN_ARGS, 1, 0);                     \
                else                                                                   \
                    fnn_adam_plain_##S(FNN_ADAM_PLAIN_ARGS, 0, 0);                     \
                continue;                                                              \
            }                                                                          \
            for (ptrdiff_t i = i0; i < i1; i++) {                                      \
                T p = param[i];                                                        \
                if (decoupled) p = p - shrink * p;                                     \
                T g = grad[i];                                                         \
                if (decay) g = g + wd * p;                                             \
                U mb, vb;                                                              \
                memcpy(&mb, &m[i], sizeof(U));                                         \
                memcpy(&vb, &v[i], sizeof(U));                                         \
                int v_sub = (vb & mag) - 1 < frac;                                     \
                int still = g == 0 && (mb & mag) < normal && v[i] >= 0                 \
                            && v[i] < (T)INFINITY /* b2 inf is NaN */                  \
                            && (p > pmin || p < -pmin);                                \
                /* the arithmetic never sees a still lane's subnormals (selects and    \
                 * integer operations only: no branch, so the loop vectorises) */      \
                T m_in = still ? (T)0 : m[i];                                          \
                T v_in = still && v_sub ? (T)0 : v[i];                                 \
                T mi = b1 * m_in + rest1 * g;                                          \
                T vi = b2 * v_in + rest2 * (g * g);                                    \
                /* divisions, not fnn_div_by: this loop is bound by its selects and    \
                 * integer work, where the conversions cost more than the divider */   \
                T upd = p - lr * (mi / corr1) / (SQRT(vi / corr2) + eps);              \
                /* rest1 g is g's zero; rest2 g^2 is +0 */                             \
                T mt = fnn_still_decay_##S(m[i], b1, g);                               \
                T vt = fnn_still_decay_##S(v[i], b2, (T)0);                            \
                m[i] = still ? mt : mi;                                                \
                v[i] = still && v_sub ? vt : vi;                                       \
                param[i] = upd; /* p in a still lane: its step is a zero */           \
            }                                                                          \
        }                                                                              \
    }

/* np.maximum(a, b): a where it is larger or NaN, else b (a tie, -0 against +0, gives b). */
#define FNN_NP_MAX(a, b) (((a) > (b) || (a) != (a)) ? (a) : (b))

/* Adamax: m = b1 m + rest1 g; u = max(b2 u, |g| + eps) as np.maximum (a NaN wins, a tie
 * takes the second: max(-0, +0) is +0);
 * param -= c m / u with c = lr / corr1. Blocks whose m holds a subnormal: still lanes
 * (g == 0, m zero or subnormal, u finite >= 0, so that u >= eps > 0 after the step, and
 * |p| above the bound under which a step of at most 2 |c| TINY / eps cannot move it)
 * take m = fl(b1 m) by integer rounding, as in Adam (p is the plain formula's: its step
 * is a zero there); u takes the plain
 * formula. */
#define FNN_ADAMAX(T, S, FABS, U, MANT, TINY)                                          \
    FNN_CLONES FNN_UNUSED static void fnn_adamax_##S(                                  \
        T *param, const T *grad, T *m, T *u, ptrdiff_t n, T c, T b1, T rest1, T b2,    \
        T eps, T wd, int decay)                                                        \
    {                                                                                  \
        const U mag = ~((U)1 << (sizeof(U) * 8 - 1)), normal = (U)1 << MANT;          \
        T pmin = INFINITY;                                                             \
        if (eps > 0 && isfinite(c) && !signbit(b1) && b1 <= 1 && !signbit(rest1)       \
            && rest1 >= 0)                                                             \
            pmin = fnn_still_pmin_##S(2.0 * fabs((double)c), (double)eps);             \
        for (ptrdiff_t i0 = 0, i1; i0 < n; i0 = i1) {                                  \
            if (!fnn_still_run_##S(m, i0, n, &i1, 1)) {                                \
                for (ptrdiff_t i = i0; i < i1; i++) {                                  \
                    T p = param[i];                                                    \
                    T g = grad[i];                                                     \
                    if (decay) g = g + wd * p;                                         \
                    T mi = b1 * m[i] + rest1 * g;                                      \
                    T ui = FNN_NP_MAX(b2 * u[i], FABS(g) + eps);                       \
                    m[i] = mi;                                                         \
                    u[i] = ui;                                                         \
                    param[i] = p - c * mi / ui;                                        \
                }                                                                      \
                continue;                                                              \
            }                                                                          \
            for (ptrdiff_t i = i0; i < i1; i++) {                                      \
                T p = param[i];                                                        \
                T g = grad[i];                                                         \
                if (decay) g = g + wd * p;                                             \
                U mb;                                                                  \
                memcpy(&mb, &m[i], sizeof(U));                                         \
                int still = g == 0 && (mb & mag) < normal && u[i] >= 0                 \
                            && u[i] < (T)INFINITY && (p > pmin || p < -pmin);          \
                T mi = b1 * (still ? (T)0 : m[i]) + rest1 * g;                         \
                T ui = FNN_NP_MAX(b2 * u[i], FABS(g) + eps);                           \
                T upd = p - c * mi / ui;                                               \
                T mt = fnn_still_decay_##S(m[i], b1, g); /* rest1 g: g's zero */       \
                m[i] = still ? mt : mi;                                                \
                u[i] = ui;                                                             \
                param[i] = upd; /* p in a still lane: its step is a zero */           \
            }                                                                          \
        }                                                                              \
    }

/* x *= f. */
#define FNN_SCALE(T, S)                                                                \
    FNN_CLONES FNN_UNUSED static void fnn_scale_##S(T *x, ptrdiff_t n, T f)            \
    {                                                                                  \
        for (ptrdiff_t i = 0; i < n; i++) x[i] = x[i] * f;                             \
    }

/* --- squared norm: one leaf of NumPy's pairwise sum ------------------------------- */

/* sum of x[i]^2 over n <= 128 values, each widened to double before squaring, in the
 * order of NumPy's pairwise leaf: eight interleaved partial sums, combined as
 * ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), then the tail; fewer than eight
 * values are added to -0.0 one by one. The eight partial sums are independent, so a
 * vector register can hold them without changing any rounding. */
#define FNN_SQ_LEAF(T, S)                                                              \
    FNN_CLONES FNN_UNUSED static double fnn_sq_leaf_##S(const T *x, ptrdiff_t n)       \
    {                                                                                  \
        double r[8], res, w;                                                           \
        ptrdiff_t i, l;                                                                \
        if (n < 8) {                                                                   \
            res = -0.0;                                                                \
            for (i = 0; i < n; i++) {                                                  \
                w = x[i];                                                              \
                res = res + w * w;                                                     \
            }                                                                          \
            return res;                                                                \
        }                                                                              \
        for (l = 0; l < 8; l++) {                                                      \
            w = x[l];                                                                  \
            r[l] = w * w;                                                              \
        }                                                                              \
        for (i = 8; i < n - n % 8; i += 8)                                             \
            for (l = 0; l < 8; l++) {                                                  \
                w = x[i + l];                                                          \
                r[l] = r[l] + w * w;                                                   \
            }                                                                          \
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));       \
        for (; i < n; i++) {                                                           \
            w = x[i];                                                                  \
            res = res + w * w;                                                         \
        }                                                                              \
        return res;                                                                    \
    }

/* --- dense layers: the passes around the GEMMs, on (m, k) row-major --------------- */
/* Activation codes (FNN_RELU...): fastnn_codes.h, written by setup.py from
 * fastnn/registry.py. Only the ones without transcendentals have loops here. */
#include "fastnn_codes.h"

/* g(t) and g'(t) for those codes: relu keeps NaN and maps -0.0 to +0.0
 * (np.maximum(t, 0)); leaky_relu is t if t > 0 else alpha t; g'(NaN) is NaN. */
#define FNN_G_IDENTITY(t, alpha) (t)
#define FNN_G_RELU(t, alpha) (((t) > 0 || (t) != (t)) ? (t) : 0)
#define FNN_G_LEAKY_RELU(t, alpha) ((t) > 0 ? (t) : (alpha) * (t))
#define FNN_D_IDENTITY(t, alpha) ((t) != (t) ? (t) : 1)
#define FNN_D_RELU(t, alpha) ((t) != (t) ? (t) : ((t) > 0 ? 1 : 0))
#define FNN_D_LEAKY_RELU(t, alpha) ((t) != (t) ? (t) : ((t) > 0 ? 1 : (alpha)))

/* The row loops, once per activation. The pointers that the kernel contract keeps
 * apart are restrict; the one allowed alias (a = z, dz = da) has its own loop, so
 * the compiler needs no run-time overlap test (which would fail on the alias). */
#define FNN_FORWARD_LOOPS(T, G)                                                        \
    if (a == z) {                                                                      \
        T *restrict zz = z;                                                            \
        for (ptrdiff_t i = 0; i < m; i++)                                              \
            for (ptrdiff_t j = 0; j < k; j++) {                                        \
                T t = zz[i * k + j] + b[j];                                            \
                zz[i * k + j] = G(t, alpha);                                           \
            }                                                                          \
    } else {                                                                           \
        T *restrict zz = z, *restrict aa = a;                                          \
        for (ptrdiff_t i = 0; i < m; i++)                                              \
            for (ptrdiff_t j = 0; j < k; j++) {                                        \
                T t = zz[i * k + j] + b[j];                                            \
                zz[i * k + j] = t;                                                     \
                aa[i * k + j] = G(t, alpha);                                           \
            }                                                                          \
    }

#define FNN_BACKWARD_LOOPS(T, D)                                                       \
    if (dz == da) {                                                                    \
        T *restrict g = dz, *restrict s = db;                                          \
        for (ptrdiff_t i = 0; i < m; i++)                                              \
            for (ptrdiff_t j = 0; j < k; j++) {                                        \
                T zj = z[i * k + j], d = D(zj, alpha);                                 \
                T t = g[i * k + j] * d;                                                \
                g[i * k + j] = t;                                                      \
                s[j] = s[j] + t;                                                       \
            }                                                                          \
    } else {                                                                           \
        T *restrict g = dz, *restrict s = db;                                          \
        const T *restrict in = da;                                                     \
        for (ptrdiff_t i = 0; i < m; i++)                                              \
            for (ptrdiff_t j = 0; j < k; j++) {                                        \
                T zj = z[i * k + j], d = D(zj, alpha);                                 \
                T t = in[i * k + j] * d;                                               \
                g[i * k + j] = t;                                                      \
                s[j] = s[j] + t;                                                       \
            }                                                                          \
    }

/* z += b (row by row) and a = g(z); a may be z (then z ends as g(z + b)).
 * Returns 0, doing nothing, for an activation code not handled here. */
#define FNN_BIAS_ACT(T, S)                                                             \
    FNN_CLONES FNN_UNUSED static int fnn_bias_act_##S(                                 \
        T *z, const T *restrict b, ptrdiff_t m, ptrdiff_t k, int act, T alpha, T *a)   \
    {                                                                                  \
        if (act == FNN_IDENTITY) {                                                     \
            FNN_FORWARD_LOOPS(T, FNN_G_IDENTITY)                                       \
        } else if (act == FNN_RELU) {                                                  \
            FNN_FORWARD_LOOPS(T, FNN_G_RELU)                                           \
        } else if (act == FNN_LEAKY_RELU) {                                            \
            FNN_FORWARD_LOOPS(T, FNN_G_LEAKY_RELU)                                     \
        } else {                                                                       \
            return 0;                                                                  \
        }                                                                              \
        return 1;                                                                      \
    }

/* dz = da * g'(z) and db += dz row by row (the caller zeroes db); dz may be da, the
 * derivative is rounded to T before the product. Returns 0, doing nothing, for an
 * activation code not handled here. */
#define FNN_ACT_GRAD_BIAS(T, S)                                                        \
    FNN_CLONES FNN_UNUSED static int fnn_act_grad_bias_##S(                            \
        const T *da, const T *restrict z, ptrdiff_t m, ptrdiff_t k, int act, T alpha,  \
        T *dz, T *db)                                                                  \
    {                                                                                  \
        if (act == FNN_IDENTITY) {                                                     \
            FNN_BACKWARD_LOOPS(T, FNN_D_IDENTITY)                                      \
        } else if (act == FNN_RELU) {                                                  \
            FNN_BACKWARD_LOOPS(T, FNN_D_RELU)                                          \
        } else if (act == FNN_LEAKY_RELU) {                                            \
            FNN_BACKWARD_LOOPS(T, FNN_D_LEAKY_RELU)                                    \
        } else {                                                                       \
            return 0;                                                                  \
        }                                                                              \
        return 1;                                                                      \
    }

/* --- batch normalisation (fastnn/reference/normalization.py): x (m, k) row-major ----
 * Column statistics in double, row after row, the vector lanes across the k columns: each
 * column's sum keeps the reference's order (NumPy's for an axis-0 sum of k > 1 columns). */

/* total[j] = sum over rows of x[:, j] (squares = 0) or of (x[:, j] - center[j])^2. */
#define FNN_BN_SUMS(T, S)                                                              \
    FNN_CLONES FNN_UNUSED static void fnn_bn_sums_##S(                                 \
        const T *restrict x, ptrdiff_t m, ptrdiff_t k, const double *restrict center,  \
        double *restrict total, int squares)                                           \
    {                                                                                  \
        for (ptrdiff_t j = 0; j < k; j++) total[j] = 0.0;                              \
        if (squares) {                                                                 \
            for (ptrdiff_t i = 0; i < m; i++)                                          \
                for (ptrdiff_t j = 0; j < k; j++) {                                    \
                    double d = (double)x[i * k + j] - center[j];                       \
                    total[j] = total[j] + d * d;                                       \
                }                                                                      \
        } else {                                                                       \
            for (ptrdiff_t i = 0; i < m; i++)                                          \
                for (ptrdiff_t j = 0; j < k; j++)                                      \
                    total[j] = total[j] + (double)x[i * k + j];                        \
        }                                                                              \
    }

/* x_hat = (T)((x - mean) inv) and out = gamma x_hat + beta; out may be x. */
#define FNN_BN_NORMALISE(T, S)                                                         \
    FNN_CLONES FNN_UNUSED static void fnn_bn_normalise_##S(                            \
        const T *x, ptrdiff_t m, ptrdiff_t k, const double *restrict mean,             \
        const double *restrict inv, const T *restrict gamma, const T *restrict beta,   \
        T *restrict x_hat, T *out)                                                     \
    {                                                                                  \
        for (ptrdiff_t i = 0; i < m; i++)                                              \
            for (ptrdiff_t j = 0; j < k; j++) {                                        \
                T xh = (T)(((double)x[i * k + j] - mean[j]) * inv[j]);                 \
                x_hat[i * k + j] = xh;                                                 \
                out[i * k + j] = gamma[j] * xh + beta[j];                              \
            }                                                                          \
    }

/* db[j] = sum over rows of dout, dg[j] = sum of dout x_hat, in double. */
#define FNN_BN_GRAD_SUMS(T, S)                                                         \
    FNN_CLONES FNN_UNUSED static void fnn_bn_grad_sums_##S(                            \
        const T *restrict dout, const T *restrict x_hat, ptrdiff_t m, ptrdiff_t k,     \
        double *restrict db, double *restrict dg)                                      \
    {                                                                                  \
        for (ptrdiff_t j = 0; j < k; j++) db[j] = dg[j] = 0.0;                         \
        for (ptrdiff_t i = 0; i < m; i++)                                              \
            for (ptrdiff_t j = 0; j < k; j++) {                                        \
                double d = (double)dout[i * k + j];                                    \
                db[j] = db[j] + d;                                                     \
                dg[j] = dg[j] + d * (double)x_hat[i * k + j];                          \
            }                                                                          \
    }

/* dx = (T)(scale ((m dout - db) - x_hat dg)); dx may be dout. */
#define FNN_BN_DX(T, S)                                                                \
    FNN_CLONES FNN_UNUSED static void fnn_bn_dx_##S(                                   \
        const T *dout, const T *restrict x_hat, ptrdiff_t m, ptrdiff_t k,              \
        const double *restrict scale, const double *restrict db,                       \
        const double *restrict dg, T *dx)                                              \
    {                                                                                  \
        double rows = (double)m;                                                       \
        for (ptrdiff_t i = 0; i < m; i++)                                              \
            for (ptrdiff_t j = 0; j < k; j++)                                          \
                dx[i * k + j] = (T)(scale[j] * ((rows * (double)dout[i * k + j] - db[j]) \
                                                - (double)x_hat[i * k + j] * dg[j]));  \
    }

/* --- products with a short inner dimension ------------------------------------------
 * c (m, n) = op(a) op(b), row-major, for 1 <= k <= FNN_SMALL_K: every element summed in
 * the order p = 0, 1, ..., k - 1, c_ij = ((a_i0 b_0j + a_i1 b_1j) + a_i2 b_2j) + ...,
 * each product and sum rounded to T (fastnn.reference.blas.gemm_small_k, the same
 * bits; a BLAS call packs both operands for a handful of products per output). The
 * lanes run across the columns j; the k rows of op(b) are copied into a panel,
 * FNN_SMALL_PANEL columns at a time. c must not overlap a or b. */
#define FNN_SMALL_K 4
#define FNN_SMALL_PANEL 256

#define FNN_SMALL_K_ROW(EXPR)                                                          \
    for (ptrdiff_t j = 0; j < w; j++) ci[j] = EXPR;

#define FNN_GEMM_SMALL_K(T, S)                                                         \
    FNN_CLONES FNN_UNUSED static void fnn_gemm_small_k_##S(                            \
        int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const T *a,   \
        ptrdiff_t lda, const T *b, ptrdiff_t ldb, T *c, ptrdiff_t ldc)                 \
    {                                                                                  \
        T panel[FNN_SMALL_K * FNN_SMALL_PANEL];                                        \
        for (ptrdiff_t j0 = 0; j0 < n; j0 += FNN_SMALL_PANEL) {                        \
            ptrdiff_t w = n - j0 < FNN_SMALL_PANEL ? n - j0 : FNN_SMALL_PANEL;         \
            /* the panel: rows p of op(b), columns j0 .. j0 + w (the copy costs less   \
             * than reading b in place, even where its rows are contiguous) */         \
            for (ptrdiff_t p = 0; p < k; p++)                                          \
                for (ptrdiff_t j = 0; j < w; j++)                                      \
                    panel[p * FNN_SMALL_PANEL + j] =                                   \
                        trans_b ? b[(j0 + j) * ldb + p] : b[p * ldb + j0 + j];         \
            const T *b0 = panel, *b1 = panel + FNN_SMALL_PANEL;                        \
            const T *b2 = panel + 2 * FNN_SMALL_PANEL;                                 \
            const T *b3 = panel + 3 * FNN_SMALL_PANEL;                                 \
            for (ptrdiff_t i = 0; i < m; i++) {                                        \
                /* op(a)[i, p]: a[p, i] when a is transposed */                        \
                ptrdiff_t at = trans_a ? i : i * lda, step = trans_a ? lda : 1;        \
                T x0 = a[at], x1 = 0, x2 = 0, x3 = 0;                                  \
                if (k > 1) x1 = a[at + step];                                          \
                if (k > 2) x2 = a[at + 2 * step];                                      \
                if (k > 3) x3 = a[at + 3 * step];                                      \
                T *restrict ci = c + i * ldc + j0;                                     \
                if (k == 1) {                                                          \
                    FNN_SMALL_K_ROW(x0 * b0[j])                                        \
                } else if (k == 2) {                                                   \
                    FNN_SMALL_K_ROW(x0 * b0[j] + x1 * b1[j])                           \
                } else if (k == 3) {                                                   \
                    FNN_SMALL_K_ROW(x0 * b0[j] + x1 * b1[j] + x2 * b2[j])              \
                } else {                                                               \
                    FNN_SMALL_K_ROW(x0 * b0[j] + x1 * b1[j] + x2 * b2[j] + x3 * b3[j]) \
                }                                                                      \
            }                                                                          \
        }                                                                              \
    }

/* A dense layer's forward with a short inner dimension in one pass over z:
 * z = x w + b, a = g(z) for x (m, kin), w (kin, n) row-major, 1 <= kin <= FNN_SMALL_K;
 * each element the sum of fnn_gemm_small_k (order p = 0 .. kin - 1, rounded to T), then
 * + b and g as fnn_bias_act: the bits of the two passes, without writing z and reading
 * it back. a may be z (then z ends as g(z + b)). Returns 0, doing nothing, for another
 * kin or an activation code not handled here. */
#define FNN_SMALL_FWD_ROWS(T, G, EXPR)                                                 \
    for (ptrdiff_t i = 0; i < m; i++) {                                                \
        const T *xi = x + i * kin;                                                     \
        T x0 = xi[0], x1 = kin > 1 ? xi[1] : 0, x2 = kin > 2 ? xi[2] : 0;              \
        T x3 = kin > 3 ? xi[3] : 0;                                                    \
        if (a == z) {                                                                  \
            T *restrict zi = z + i * n;                                                \
            for (ptrdiff_t j = 0; j < n; j++) {                                        \
                T t = (EXPR) + b[j];                                                   \
                zi[j] = G(t, alpha);                                                   \
            }                                                                          \
        } else {                                                                       \
            T *restrict zi = z + i * n, *restrict ai = a + i * n;                      \
            for (ptrdiff_t j = 0; j < n; j++) {                                        \
                T t = (EXPR) + b[j];                                                   \
                zi[j] = t;                                                             \
                ai[j] = G(t, alpha);                                                   \
            }                                                                          \
        }                                                                              \
    }

/* ROWS(T, F, sum) for the sum of kin = 1 .. 4 terms x_p b_p[j] (fnn_gemm_small_k's
 * order), F the activation's g or g'. */
#define FNN_SMALL_K_SUMS(ROWS, T, F)                                                   \
    if (kin == 1) {                                                                    \
        ROWS(T, F, x0 * b0[j])                                                         \
    } else if (kin == 2) {                                                             \
        ROWS(T, F, x0 * b0[j] + x1 * b1[j])                                            \
    } else if (kin == 3) {                                                             \
        ROWS(T, F, x0 * b0[j] + x1 * b1[j] + x2 * b2[j])                               \
    } else {                                                                           \
        ROWS(T, F, x0 * b0[j] + x1 * b1[j] + x2 * b2[j] + x3 * b3[j])                  \
    }

#define FNN_SMALL_K_BIAS_ACT(T, S)                                                     \
    FNN_CLONES FNN_UNUSED static int fnn_small_k_bias_act_##S(                         \
        const T *restrict x, const T *restrict w, const T *restrict b, ptrdiff_t m,    \
        ptrdiff_t kin, ptrdiff_t n, int act, T alpha, T *z, T *a)                      \
    {                                                                                  \
        if (kin < 1 || kin > FNN_SMALL_K) return 0;                                    \
        const T *b0 = w, *b1 = w + n, *b2 = w + 2 * n, *b3 = w + 3 * n;                \
        if (act == FNN_IDENTITY) {                                                     \
            FNN_SMALL_K_SUMS(FNN_SMALL_FWD_ROWS, T, FNN_G_IDENTITY)                    \
        } else if (act == FNN_RELU) {                                                  \
            FNN_SMALL_K_SUMS(FNN_SMALL_FWD_ROWS, T, FNN_G_RELU)                        \
        } else if (act == FNN_LEAKY_RELU) {                                            \
            FNN_SMALL_K_SUMS(FNN_SMALL_FWD_ROWS, T, FNN_G_LEAKY_RELU)                  \
        } else {                                                                       \
            return 0;                                                                  \
        }                                                                              \
        return 1;                                                                      \
    }

/* A layer's backward through the product of the layer above it, for that product's
 * short inner dimension: da = g w^T for g (m, kin) (the layer above's dz) and its w
 * (n, kin), row-major, 1 <= kin <= FNN_SMALL_K (fnn_gemm_small_k's order: the panel of
 * w^T, then each element summed p = 0 .. kin - 1 in T), and at once fnn_act_grad_bias's
 * dz = da g'(z), db[j] += dz row after row: the bits of the two passes, da never
 * written. db must hold the sums to add to (zeros). dz must not overlap g, z or db.
 * Returns 0, doing nothing, for another kin or an activation code not handled here. */
#define FNN_SMALL_BWD_ROWS(T, D, EXPR)                                                 \
    for (ptrdiff_t i = 0; i < m; i++) {                                                \
        const T *gi = g + i * kin;                                                     \
        T x0 = gi[0], x1 = kin > 1 ? gi[1] : 0, x2 = kin > 2 ? gi[2] : 0;              \
        T x3 = kin > 3 ? gi[3] : 0;                                                    \
        const T *restrict zi = z + i * n + j0;                                         \
        T *restrict dzi = dz + i * n + j0;                                             \
        T *restrict dbj = db + j0;                                                     \
        for (ptrdiff_t j = 0; j < w; j++) {                                            \
            T t = EXPR, d = D(zi[j], alpha);                                           \
            T u = t * d;                                                               \
            dzi[j] = u;                                                                \
            dbj[j] = dbj[j] + u;                                                       \
        }                                                                              \
    }

#define FNN_SMALL_K_ACT_GRAD_BIAS(T, S)                                                \
    FNN_CLONES FNN_UNUSED static int fnn_small_k_act_grad_bias_##S(                    \
        const T *restrict g, const T *restrict wt, const T *restrict z, ptrdiff_t m,   \
        ptrdiff_t kin, ptrdiff_t n, int act, T alpha, T *restrict dz, T *restrict db)  \
    {                                                                                  \
        if (kin < 1 || kin > FNN_SMALL_K) return 0;                                    \
        if (act != FNN_IDENTITY && act != FNN_RELU && act != FNN_LEAKY_RELU) return 0; \
        T panel[FNN_SMALL_K * FNN_SMALL_PANEL];                                        \
        const T *b0 = panel, *b1 = panel + FNN_SMALL_PANEL;                            \
        const T *b2 = panel + 2 * FNN_SMALL_PANEL, *b3 = panel + 3 * FNN_SMALL_PANEL;  \
        for (ptrdiff_t j0 = 0; j0 < n; j0 += FNN_SMALL_PANEL) {                        \
            ptrdiff_t w = n - j0 < FNN_SMALL_PANEL ? n - j0 : FNN_SMALL_PANEL;         \
            for (ptrdiff_t p = 0; p < kin; p++)                                        \
                for (ptrdiff_t j = 0; j < w; j++)                                      \
                    panel[p * FNN_SMALL_PANEL + j] = wt[(j0 + j) * kin + p];           \
            if (act == FNN_IDENTITY) {                                                 \
                FNN_SMALL_K_SUMS(FNN_SMALL_BWD_ROWS, T, FNN_D_IDENTITY)                \
            } else if (act == FNN_RELU) {                                              \
                FNN_SMALL_K_SUMS(FNN_SMALL_BWD_ROWS, T, FNN_D_RELU)                    \
            } else {                                                                   \
                FNN_SMALL_K_SUMS(FNN_SMALL_BWD_ROWS, T, FNN_D_LEAKY_RELU)              \
            }                                                                          \
        }                                                                              \
        return 1;                                                                      \
    }

#define FNN_ALL(T, S, SQRT, FABS, U, MANT, TINY)                                       \
    FNN_SGD(T, S)                                                                      \
    FNN_STILL_DECAY(T, S, U, MANT)                                                     \
    FNN_STILL_PMIN(T, S, MANT, TINY)                                                   \
    FNN_ANY_SUBNORMAL(T, S, U, MANT)                                                   \
    FNN_STILL_RUN(T, S)                                                                \
    FNN_MOMENTUM(T, S, U, MANT, TINY)                                                  \
    FNN_ADAPTIVE(T, S, SQRT, U, MANT)                                                  \
    FNN_ADAM_PLAIN(T, S, SQRT)                                                         \
    FNN_ADAM(T, S, SQRT, U, MANT, TINY)                                                \
    FNN_ADAMAX(T, S, FABS, U, MANT, TINY)                                              \
    FNN_SCALE(T, S)                                                                    \
    FNN_SQ_LEAF(T, S)                                                                  \
    FNN_BIAS_ACT(T, S)                                                                 \
    FNN_ACT_GRAD_BIAS(T, S)                                                            \
    FNN_BN_SUMS(T, S)                                                                  \
    FNN_BN_NORMALISE(T, S)                                                             \
    FNN_BN_GRAD_SUMS(T, S)                                                             \
    FNN_BN_DX(T, S)                                                                    \
    FNN_GEMM_SMALL_K(T, S)                                                             \
    FNN_SMALL_K_BIAS_ACT(T, S)                                                         \
    FNN_SMALL_K_ACT_GRAD_BIAS(T, S)

FNN_ALL(float, f32, sqrtf, fabsf, uint32_t, 23, 0x1p-126)
FNN_ALL(double, f64, sqrt, fabs, uint64_t, 52, 0x1p-1022)

#endif /* FASTNN_SIMD_H */
