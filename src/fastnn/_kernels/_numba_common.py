"""Shared pieces of the Numba kernels.

- ``jit``: the one decorator policy of every kernel (cached, GIL released, NumPy's
  error model so division loops vectorise; never fast-math, so no FMA contraction);
  ``jit_borrowing``, the same without Numba's reference counts, for the whole-epoch
  kernels (their caller owns every array, scratch included).
- ``cast_like``: a constant in the dtype of an array or scalar (Numba promotes
  ``float32 * 2.0`` to float64; NumPy 2 casts the Python float to float32 first).
- ``pairwise_sum`` and the pieces of its walk: NumPy's pairwise summation, so sums and
  means come out as the reference's ``np.sum``/``np.mean`` bit for bit (the walk's
  stack in the calling function's frame).
- ``gemm``, ``gemm_threads``: the very BLAS calls ``fastnn.reference.blas.gemm`` makes
  (its shape-determined tiles, through :mod:`fastnn._blas`), on one thread or on
  Numba's threads.
- ``tanh_f64``, ``exp_f64``, ``log_f64``: NumPy's own float64 loops, in place on a
  buffer (the comment above them says why).
- ``erfc_f64``: SciPy's scalar erfc (gelu's; scipy_special.py says why).

The foreign functions are reached through named symbols registered with LLVM at
import, not through addresses baked into the machine code, so the compiled kernels stay
valid in Numba's on-disk cache across processes. Under ``NUMBA_DISABLE_JIT=1`` every
helper has a plain Python body with the same results.
"""

import ctypes
import functools
import hashlib
from pathlib import Path

import numpy as np
from numba import njit, types
from numba.core import config
from numba.core.caching import CompileResultCacheImpl, IndexDataCacheFile
from numba.extending import intrinsic, overload

from .. import _blas as _fastnn_blas
from ..reference.blas import (
    GEMM_COPY_MAX,
    GEMM_OWN,
    GEMM_SMALL_K,
    GEMM_SMALL_MNK,
    GEMM_SPLIT_FLOPS,
    gemm_claim,
    gemm_copies_b,
    gemm_edge,
    gemm_grid,
    gemm_narrowest,
)
from .numpy_loops import loop_addresses
from .scipy_special import erfc_address

DISABLE_JIT = bool(config.DISABLE_JIT)

_OPTIONS = {"cache": True, "nogil": True, "error_model": "numpy"}


def sources_digest(*paths: Path) -> str:
    """A digest of the ``.py`` files among ``paths`` and in its folders (names and
    contents, in order).

    Numba invalidates a cached function when the file that defines it changes, not
    when a helper it calls, compiled into its machine code, changes in another file: a
    whole-epoch kernel cached before a fix to ``optimizers_numba.py`` would keep the old
    update. The cache index carries this digest of the kernels' sources and of the
    modules whose values they read at compile time, so any change to them recompiles
    everything once."""
    h = hashlib.sha256()
    for path in paths:
        for file in sorted(path.glob("*.py")) if path.is_dir() else [path]:
            h.update(file.name.encode())
            h.update(file.read_bytes())
    return h.hexdigest()[:16]


def sources_tag(*paths: Path) -> str:
    """:func:`sources_digest` of ``paths``, or ``"unread"`` when a source cannot be read
    as a file (a zip import): the cache index then keeps Numba's own check alone."""
    try:
        return sources_digest(*paths)
    except OSError:
        return "unread"


_HERE = Path(__file__).resolve().parent
# what the compiled kernels are made of: their own files, and the modules whose values
# they read at compile time
SOURCE_PATHS = (
    _HERE,
    _HERE.parent / "reference",
    _HERE.parent / "registry.py",
    _HERE.parent / "_blas.py",
)
_SOURCES = sources_tag(*SOURCE_PATHS)


class KeyedCacheFile(IndexDataCacheFile):
    """Numba's cache index and data files, each data file named after its entry's key
    (a hash of the signature, target and code) instead of the first free number.

    Processes that compile different overloads of one kernel at the same time (Dask
    workers, joblib, subprocesses started together) each read the index, add their
    entry and write it back. With numbered names two of them can both take number N:
    the index one leaves then points at the machine code the other wrote, and the next
    process to load that entry runs the wrong code (a segmentation fault). With keyed
    names a lost race only drops an index entry (a recompilation later), never maps a
    key to another entry's code.

    The index carries a format tag besides Numba's version (``FORMAT``): indexes written
    before ``ReloadingCacheImpl`` may list entries without their reload functions
    (which crash when loaded), and an index with another tag is ignored (recompiled
    once) rather than trusted. The tag ends with :func:`sources_digest` of the kernels'
    sources, so an index written by other kernel sources is ignored the same way.
    """

    # 2: entries keep the reload functions of their callees; the tiling rule's
    # GEMM_SMALL_MNK (fastnn's BLAS core's) and GEMM_OWN (FASTNN_GEMM's) are compiled in
    FORMAT = f"fastnn-keyed-2-{_SOURCES}-{GEMM_SMALL_MNK}-{int(GEMM_OWN)}"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._version = self.tagged_version(self._version)

    @classmethod
    def tagged_version(cls, numba_version):
        """The version written at the head of the index: Numba's and ``FORMAT``."""
        return (numba_version, cls.FORMAT)

    def save(self, key, data):
        overloads = self._load_index()
        name = overloads.get(key)
        if name is None:
            # the tag too: processes with other tags (another BLAS core's tiling
            # limit) never write their code under a name this index lists
            digest = hashlib.sha256(repr((key, self.FORMAT)).encode()).hexdigest()[:24]
            name = f"{self._index_name[: -len('.nbi')]}.{digest}.nbc"
            overloads[key] = name
            self._save_index(overloads)
        self._save_data(name, data)


class ReloadingCacheImpl(CompileResultCacheImpl):
    """Numba's rebuilding of a cached kernel, which also hands the kernel's reload
    functions on to the kernels compiled against it.

    A kernel with a parallel loop (``jit_parallel``) lists a reload function in its
    cache entry, which starts Numba's threading layer before the machine code is used
    in a new process; a kernel calling it inherits the function when the callee was
    compiled in the same process. When the callee was loaded from the cache, Numba
    (up to at least 0.68, numba/numba#8578) leaves the loaded library without it, so the
    caller's entry -- say the epoch kernel compiled by a process that found
    ``gemm_threads`` already cached -- is saved without it, and the next process that
    loads it runs code calling an unstarted threading layer: a segmentation fault,
    even on one thread.
    """

    def rebuild(self, target_context, payload):
        cres = super().rebuild(target_context, payload)
        cres.library._reload_init.update(cres.reload_init)
        return cres


def _keyed_cache(decorator):
    """``decorator`` (an njit with cache=True), its dispatchers' cache made keyed
    (``KeyedCacheFile``) and reloading (``ReloadingCacheImpl``)."""

    def apply(func):
        dispatcher = decorator(func)
        cache = getattr(dispatcher, "_cache", None)
        cache_file = getattr(cache, "_cache_file", None)
        if type(cache_file) is IndexDataCacheFile:
            cache_file.__class__ = KeyedCacheFile
            cache_file._version = KeyedCacheFile.tagged_version(cache_file._version)
        impl = getattr(cache, "_impl", None)
        if type(impl) is CompileResultCacheImpl:
            impl.__class__ = ReloadingCacheImpl
        return dispatcher

    return apply


if not DISABLE_JIT:
    # The decorator policy of every kernel and helper.
    jit = _keyed_cache(njit(**_OPTIONS))
    # Small scalar helpers are inlined into their callers at the Numba IR level: the
    # same machine code, without a separate compilation per helper. Only scalar ones:
    # an inlined helper's array arguments are new references, each taken and dropped
    # with an atomic increment (Numba's NRT) at every call. For the same reason a
    # helper called per row or per block calls nothing with its arrays itself.
    jit_inline = _keyed_cache(njit(inline="always", **_OPTIONS))
    # Loops over a few large independent pieces (numba.prange), run on Numba's threads
    # (as many as numba.get_num_threads(): the caller sets it outside compiled code).
    # Their parallel loops need Numba's runtime (NRT), so they keep it even when called
    # from a kernel compiled without it (jit_borrowing, below).
    jit_parallel = _keyed_cache(njit(parallel=True, _nrt=True, **_OPTIONS))
    # A kernel that allocates nothing and whose arrays its caller keeps alive (the
    # whole-epoch kernels, given their scratch): compiled without Numba's runtime
    # (NRT), so neither it nor the helpers compiled for it take an atomic reference on
    # every array view and every call (about a hundred pairs a step on config A).
    jit_borrowing = _keyed_cache(njit(_nrt=False, **_OPTIONS))
else:

    def jit(func):
        """Python mode: the plain function, without NumPy's floating-point warnings
        (compiled kernels overflow to inf and produce NaN silently)."""

        @functools.wraps(func)
        def kernel(*args):
            with np.errstate(all="ignore"):
                return func(*args)

        return kernel

    def jit_inline(func):
        return func

    jit_parallel = jit
    jit_borrowing = jit


# --- dtype-exact constants ------------------------------------------------------------


def cast_like(x, v):
    """``v`` converted (rounded to nearest) to the dtype of array or scalar ``x``."""
    return x.dtype.type(v)


def float_limits(x):
    """Array ``x``'s dtype's smallest normal (``2**-126`` or ``2**-1022``) and its
    machine epsilon (``2**-23`` or ``2**-52``), Python floats. Subnormal optimizer
    states: docs/spec.md §5."""
    fi = np.finfo(x.dtype)
    return float(fi.tiny), float(fi.eps)


def div_by(x, c, inv):
    """``x / c`` for a divisor ``0 < c <= 1`` fixed over a loop (Adam's bias
    corrections), ``inv = 1.0 / float(c)``: a float32 ``x`` takes the double product
    ``x inv`` rounded once to float32, which has the division's bits for every x and
    such c (docs/spec.md §5, "Quotients by the bias corrections") at a fraction of a
    float divider's time; a float64 ``x`` divides."""
    return x / c


@overload(div_by, inline="always")
def _div_by_overload(x, c, inv):
    if x == types.float32:
        return lambda x, c, inv: np.float32(np.float64(x) * inv)
    return lambda x, c, inv: x / c


@overload(float_limits, inline="always")
def _float_limits_overload(x):
    fi = np.finfo(np.float32 if x.dtype == types.float32 else np.float64)
    tiny, eps = float(fi.tiny), float(fi.eps)
    return lambda x: (tiny, eps)


def as_bits(x):
    """A float32 or float64 scalar's bits, as the unsigned integer of its width."""
    return x.view(np.uint32 if x.dtype == np.float32 else np.uint64)


def of_bits(b):
    """The float32 or float64 scalar whose bits are the unsigned integer ``b``."""
    return b.view(np.float32 if b.dtype == np.uint32 else np.float64)


if not DISABLE_JIT:

    def _bitcast(to):
        @intrinsic
        def cast(typingctx, x):
            target = to(x)

            def codegen(context, builder, signature, args):
                return builder.bitcast(args[0], context.get_value_type(target))

            return target(x), codegen

        return cast

    _as_bits = _bitcast(lambda x: types.uint32 if x == types.float32 else types.uint64)
    _of_bits = _bitcast(lambda b: types.float32 if b == types.uint32 else types.float64)

    @overload(as_bits, inline="always")
    def _as_bits_overload(x):
        return lambda x: _as_bits(x)

    @overload(of_bits, inline="always")
    def _of_bits_overload(b):
        return lambda b: _of_bits(b)


@overload(cast_like, inline="always")
def _cast_like_overload(x, v):
    dt = x.dtype if isinstance(x, types.Array) else x

    def impl(x, v):
        return dt(v)

    return impl


# --- NumPy's pairwise summation -------------------------------------------------------

# NumPy sums a contiguous run of n values by halving it (at multiples of 8) down to
# blocks of at most PW_BLOCK values, each added with 8 interleaved accumulators.
# ``pairwise_sum`` does this on an array. A kernel whose terms are computed on the fly
# runs the same walk itself: ``pairwise_descend`` gives the next block, the kernel fills
# a PW_BLOCK buffer with that block's terms and adds it with ``block_sum``, and
# ``pairwise_combine`` folds the block's sum into the pending halves. The walk keeps
# its own stack (a recursive Numba function cannot be cached when another calls it)
# and takes no function argument (a kernel passing one cannot be cached either).
PW_BLOCK = 128
PW_DEPTH = 64  # each split halves n: 64 pending halves cover any length


def pairwise_stack(dtype_like):
    """The walk's stack: pending right halves (lo, n, left done) and left sums (zeros,
    of ``dtype_like``'s dtype)."""
    return np.empty((PW_DEPTH, 3), np.int64), np.zeros(PW_DEPTH, dtype_like.dtype)


if not DISABLE_JIT:

    @intrinsic
    def _pairwise_stack_frame(typingctx, dtype_like):
        """pairwise_stack in the calling function's stack frame: no heap allocation and
        no reference count (so kernels compiled without Numba's runtime may sum too).
        The arrays live as long as that frame, like its local variables; the intrinsic
        is expanded in place, so the frame is the caller's, never a helper's."""
        dt = dtype_like.dtype
        nodes_t = types.Array(types.int64, 2, "C")
        sums_t = types.Array(dt, 1, "C")

        def codegen(context, builder, sig, args):
            from numba.core import cgutils
            from numba.np.arrayobj import make_array, populate_array

            def frame_array(arrty, n_items, shape, strides):
                item = context.get_data_type(arrty.dtype)
                data = cgutils.alloca_once(builder, item, size=n_items)
                ary = make_array(arrty)(context, builder)
                intp = context.get_value_type(types.intp)
                populate_array(
                    ary,
                    data=data,
                    shape=[intp(v) for v in shape],
                    strides=[intp(v) for v in strides],
                    itemsize=intp(context.get_abi_sizeof(item)),
                    meminfo=None,
                )
                return ary, data, item

            nodes, _, _ = frame_array(nodes_t, PW_DEPTH * 3, (PW_DEPTH, 3), (24, 8))
            size = context.get_abi_sizeof(context.get_data_type(dt))
            sums, data, item = frame_array(sums_t, PW_DEPTH, (PW_DEPTH,), (size,))
            cgutils.memset(builder, data, context.get_constant(types.intp, PW_DEPTH * size), 0)
            return context.make_tuple(
                builder, sig.return_type, (nodes._getvalue(), sums._getvalue())
            )

        return types.Tuple((nodes_t, sums_t))(dtype_like), codegen

    @overload(pairwise_stack, inline="always")
    def _pairwise_stack_overload(dtype_like):
        return lambda dtype_like: _pairwise_stack_frame(dtype_like)


@jit_inline
def pairwise_split(n):
    """Where a run of n > PW_BLOCK values is halved: n // 2 down to a multiple of 8."""
    half = n // 2
    return half - half % 8


@jit
def pairwise_descend(nodes, sp, lo, n):
    """Split [lo, lo + n) down to its first block: push the right halves, return
    (sp, block length)."""
    while n > PW_BLOCK:
        half = pairwise_split(n)
        nodes[sp, 0] = lo + half
        nodes[sp, 1] = n - half
        nodes[sp, 2] = 0
        sp += 1
        n = half
    return sp, n


@jit
def pairwise_combine(nodes, sums, sp, v):
    """Fold the sum v of a finished block into the pending halves.

    Returns (sp, v, lo, n): [lo, lo + n) is the next run to descend into, or n == 0
    when v is the whole sum.
    """
    while sp > 0:
        top = sp - 1
        if nodes[top, 2] == 0:
            sums[top] = v
            nodes[top, 2] = 1
            return sp, v, nodes[top, 0], nodes[top, 1]
        v = sums[top] + v
        sp -= 1
    return 0, v, 0, 0


# NumPy adds a block of n >= 8 values with 8 accumulators, r_l = a[lo + l] + a[lo + 8 + l]
# + ... over the first n - n % 8 values, then ((r0 + r1) + (r2 + r3)) + ((r4 + r5) +
# (r6 + r7)), then the last n % 8 one by one. LLVM keeps those 8 chains scalar (its
# vectorisers neither bundle loop-carried accumulators nor reorder float additions), at
# about a fifth of a vector loop's speed; ``lane_sums`` / ``lane_squares`` emit the
# vector loop itself (8 lanes, one per accumulator): the same additions in the same
# order, so the same bits.
def _lane_sums_py(a, lo, end):
    """The 8 accumulators of a[lo:end] (end - lo a positive multiple of 8), a's dtype."""
    acc = [a[lo + k] for k in range(8)]
    for i in range(lo + 8, end, 8):
        for k in range(8):
            acc[k] = acc[k] + a[i + k]
    return tuple(acc)


def _lane_squares_py(x, lo, end):
    """The 8 float64 accumulators of x[i]^2 over x[lo:end] (as ``_lane_sums_py``)."""
    return _lane_sums_py(np.asarray(x[lo:end], np.float64) ** 2, 0, end - lo)


def _lanes_intrinsic(square):
    """An intrinsic (x, lo, end) -> 8 accumulators: x[i] (x's dtype) or float64(x[i])^2
    (float64) added lane by lane over [lo, end), end - lo a positive multiple of 8."""

    def typer(typingctx, x, lo, end):
        ok = isinstance(x, types.Array) and x.ndim == 1 and x.layout == "C"
        if not (ok and x.dtype in (types.float32, types.float64)):
            return None
        acc_type = types.float64 if square else x.dtype
        sig = types.UniTuple(acc_type, 8)(x, types.intp, types.intp)

        def codegen(context, builder, signature, args):
            from llvmlite import ir

            arr = context.make_array(signature.args[0])(context, builder, args[0])
            lo_v, end_v = args[1], args[2]
            elt = context.get_data_type(x.dtype)
            acc_t = ir.VectorType(context.get_data_type(acc_type), 8)
            load_t = ir.VectorType(elt, 8).as_pointer()

            def terms(i):
                ptr = builder.bitcast(builder.gep(arr.data, [i], inbounds=True), load_t)
                v = builder.load(ptr, align=1)
                if square:
                    if x.dtype == types.float32:
                        v = builder.fpext(v, acc_t)
                    v = builder.fmul(v, v)
                return v

            first = terms(lo_v)
            eight = ir.Constant(lo_v.type, 8)
            start = builder.add(lo_v, eight)  # in the entry block: it feeds the phi from there
            entry = builder.block
            head = builder.append_basic_block("lanes.head")
            body = builder.append_basic_block("lanes.body")
            done = builder.append_basic_block("lanes.done")
            builder.branch(head)
            builder.position_at_end(head)
            i = builder.phi(lo_v.type)
            acc = builder.phi(acc_t)
            i.add_incoming(start, entry)
            acc.add_incoming(first, entry)
            builder.cbranch(builder.icmp_signed("<", i, end_v), body, done)
            builder.position_at_end(body)
            i.add_incoming(builder.add(i, eight), body)
            acc.add_incoming(builder.fadd(acc, terms(i)), body)
            builder.branch(head)
            builder.position_at_end(done)
            lanes = [builder.extract_element(acc, ir.Constant(ir.IntType(32), k)) for k in range(8)]
            return context.make_tuple(builder, signature.return_type, lanes)

        return sig, codegen

    return intrinsic(typer)


if not DISABLE_JIT:
    lane_sums = _lanes_intrinsic(False)
    lane_squares = _lanes_intrinsic(True)
else:
    lane_sums, lane_squares = _lane_sums_py, _lane_squares_py


@jit_inline
def lanes_total(r):
    """NumPy's combination of a block's 8 accumulators."""
    return ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))


# A plain call, not IR-inlined: inlined, it took and dropped a reference to the array
# (atomic increments, Numba's NRT) in every block. The call costs ~2 ns a block (a
# 300,000-value float32 sum 26.9 us instead of 22.3), nothing for the sums a step runs
# here (a batch long at most); the one long sum, the gradient norm, writes its block of
# squares out (optimizers_numba.squared_norm_ws).
@jit
def block_sum(a, lo, n):
    """a[lo] + ... + a[lo + n - 1], 1 <= n <= PW_BLOCK, as NumPy adds one block.

    The accumulators have the dtype of a.
    """
    if n < 8:
        res, tail = a[lo], lo + 1
    else:
        tail = lo + n - n % 8
        res = lanes_total(lane_sums(a, lo, tail))
    for i in range(tail, lo + n):
        res += a[i]
    return res


@jit
def pairwise_sum(a, n):
    """a[0] + ... + a[n - 1], n >= 1, in NumPy's pairwise order and a's dtype.

    NumPy's reductions add this to their initial 0.0; callers do the same where the
    sign of a zero sum matters.
    """
    if n <= PW_BLOCK:
        return block_sum(a, np.intp(0), n)
    nodes, sums = pairwise_stack(a)
    return pairwise_sum_ws(a, n, nodes, sums)


@jit
def pairwise_sum_ws(a, n, nodes, sums):
    """pairwise_sum with the walk's stack given (``pairwise_stack``; sums of a's dtype),
    so that a kernel running many sums allocates it once."""
    lo = np.intp(0)
    sp, cnt = (0, n) if n <= PW_BLOCK else pairwise_descend(nodes, 0, lo, n)
    while True:
        res = block_sum(a, lo, cnt)
        if sp == 0:  # nothing pending: a run of one block
            return res
        sp, v, lo, n = pairwise_combine(nodes, sums, sp, res)
        if n == 0:
            return v
        sp, cnt = pairwise_descend(nodes, sp, lo, n)


# --- BLAS: the reference's GEMM calls --------------------------------------------------

# (Names kept from when they were SciPy's cython_blas functions: kernels compiled into
# Numba's on-disk cache by an earlier version still link, to fastnn._blas's functions.)
_GEMM_SYMBOLS = {
    types.float32: "fastnn_cython_blas_sgemm",
    types.float64: "fastnn_cython_blas_dgemm",
}
_NOTRANS, _TRANS = ord("N"), ord("T")

# fastnn.reference.blas's tiling rule itself, compiled: one rule for every backend.
gemm_tile_grid = jit_inline(gemm_grid)
gemm_tile_edge = jit_inline(gemm_edge)
gemm_copy_rule = jit_inline(gemm_copies_b)
gemm_tile_narrowest = jit_inline(gemm_narrowest)
gemm_tile_claim = jit_inline(gemm_claim)
_SHARE_SYMBOLS = ("fastnn_gemm_share", "fastnn_gemm_share_pack", "fastnn_gemm_unshare")


if not DISABLE_JIT:
    import llvmlite.binding as _llvm
    from llvmlite import ir as _ir
    from numba import prange as _prange
    from numba.core import cgutils as _cgutils

    # fastnn's own single-threaded BLAS instance (fastnn._blas), as every backend calls.
    for _sym, _address in zip(_GEMM_SYMBOLS.values(), _fastnn_blas.gemm_addresses()):
        _llvm.add_symbol(_sym, _address)
    for _sym, _address in zip(_SHARE_SYMBOLS, _fastnn_blas.share_addresses()):
        _llvm.add_symbol(_sym, _address)

    def _slot(builder, value):
        """A stack slot holding ``value``: BLAS takes every argument by pointer."""
        return _cgutils.alloca_once_value(builder, value)

    @intrinsic
    def _xgemm(typingctx, transa, transb, m, n, k, a, a_off, lda, b, b_off, ldb, c, c_off, ldc):
        """Column-major C = op(A) op(B) through fastnn._blas's ?gemm_, each
        matrix starting ``*_off`` elements into its array's data."""
        symbol = _GEMM_SYMBOLS[c.dtype]
        sig = types.void(transa, transb, m, n, k, a, a_off, lda, b, b_off, ldb, c, c_off, ldc)

        def codegen(context, builder, signature, args):
            i8, i32 = _ir.IntType(8), _ir.IntType(32)
            fty = context.get_value_type(c.dtype)
            fnty = _ir.FunctionType(
                _ir.VoidType(),
                [
                    i8.as_pointer(),
                    i8.as_pointer(),
                    i32.as_pointer(),
                    i32.as_pointer(),
                    i32.as_pointer(),
                    fty.as_pointer(),
                    fty.as_pointer(),
                    i32.as_pointer(),
                    fty.as_pointer(),
                    i32.as_pointer(),
                    fty.as_pointer(),
                    fty.as_pointer(),
                    i32.as_pointer(),
                ],
            )
            fn = _cgutils.get_or_insert_function(builder.module, fnty, symbol)
            ta, tb, m_, n_, k_, a_, ao, lda_, b_, bo, ldb_, c_, co, ldc_ = args

            def data(ty, val, off):
                ptr = context.make_array(ty)(context, builder, val).data
                return builder.gep(ptr, [off])

            def char(v):
                return _slot(builder, builder.trunc(v, i8))

            def int32(v):
                return _slot(builder, builder.trunc(v, i32))

            builder.call(
                fn,
                [
                    char(ta),
                    char(tb),
                    int32(m_),
                    int32(n_),
                    int32(k_),
                    _slot(builder, fty(1.0)),
                    data(a, a_, ao),
                    int32(lda_),
                    data(b, b_, bo),
                    int32(ldb_),
                    _slot(builder, fty(0.0)),
                    data(c, c_, co),
                    int32(ldc_),
                ],
            )
            return context.get_dummy_value()

        return sig, codegen

    @intrinsic
    def _share(typingctx, trans_a, m, n, k, a, lda, out, ldc, narrowest):
        """fastnn_gemm.h's fnn_own_share through its linked symbol: the slot of out's
        dtype taken to pack op(a) of the product out = op(a) @ op(b) once for its
        column tiles; the number of chunks to pack (_share_pack, then _unshare after
        the tiles), or 0."""
        sig = types.int32(trans_a, m, n, k, a, lda, out, ldc, narrowest)

        def codegen(context, builder, signature, args):
            i8p, i32 = _ir.IntType(8).as_pointer(), _ir.IntType(32)
            fnty = _ir.FunctionType(i32, [i32, i32, i32, i32, i32, i8p, i32, i8p, i32, i32])
            fn = _cgutils.get_or_insert_function(builder.module, fnty, _SHARE_SYMBOLS[0])
            ta, m_, n_, k_, a_, lda_, out_, ldc_, nw = args

            def ptr(ty, val):
                data = context.make_array(ty)(context, builder, val).data
                return builder.bitcast(data, i8p)

            def int32(ty, v):
                return context.cast(builder, v, ty, types.int32)

            return builder.call(
                fn,
                [
                    i32(out.dtype.bitwidth // 8),
                    int32(trans_a, ta),
                    int32(m, m_),
                    int32(n, n_),
                    int32(k, k_),
                    ptr(a, a_),
                    int32(lda, lda_),
                    ptr(out, out_),
                    int32(ldc, ldc_),
                    int32(narrowest, nw),
                ],
            )

        return sig, codegen

    @intrinsic
    def _share_pack(typingctx, like, chunk):
        """fastnn_gemm.h's fnn_own_share_pack through its linked symbol, for the slot
        of like's dtype."""

        def codegen(context, builder, signature, args):
            i32 = _ir.IntType(32)
            fnty = _ir.FunctionType(_ir.VoidType(), [i32, i32])
            fn = _cgutils.get_or_insert_function(builder.module, fnty, _SHARE_SYMBOLS[1])
            size = i32(like.dtype.bitwidth // 8)
            builder.call(fn, [size, context.cast(builder, args[1], chunk, types.int32)])
            return context.get_dummy_value()

        return types.void(like, chunk), codegen

    @intrinsic
    def _unshare(typingctx, like):
        """fastnn_gemm.h's fnn_own_unshare through its linked symbol, for the slot of
        like's dtype."""

        def codegen(context, builder, signature, args):
            i32 = _ir.IntType(32)
            fnty = _ir.FunctionType(_ir.VoidType(), [i32])
            fn = _cgutils.get_or_insert_function(builder.module, fnty, _SHARE_SYMBOLS[2])
            builder.call(fn, [i32(like.dtype.bitwidth // 8)])
            return context.get_dummy_value()

        return types.void(like), codegen

    _SMALL_PANEL = 256  # columns of op(b) per panel, as fastnn_simd.h's FNN_SMALL_PANEL

    @intrinsic
    def _stack_panel(typingctx, like):
        """A C-contiguous (GEMM_SMALL_K, _SMALL_PANEL) array of like's dtype on the
        calling function's stack (no NRT allocation, no reference counting: it
        must not outlive that call)."""
        if not isinstance(like, types.Array):
            return None
        panel_type = types.Array(like.dtype, 2, "C")

        def codegen(context, builder, signature, args):
            from llvmlite import ir
            from numba.core import cgutils
            from numba.np.arrayobj import populate_array

            size = GEMM_SMALL_K * _SMALL_PANEL
            elt = context.get_data_type(like.dtype)
            data = cgutils.alloca_once(builder, elt, size=size)
            intp = context.get_value_type(types.intp)
            itemsize = ir.Constant(intp, context.get_abi_sizeof(elt))
            panel = context.make_array(panel_type)(context, builder)
            populate_array(
                panel,
                data=data,
                shape=[ir.Constant(intp, GEMM_SMALL_K), ir.Constant(intp, _SMALL_PANEL)],
                strides=[ir.Constant(intp, _SMALL_PANEL * context.get_abi_sizeof(elt)), itemsize],
                itemsize=itemsize,
                meminfo=None,
            )
            return panel._getvalue()

        return panel_type(like), codegen

    stack_panel = _stack_panel

    @intrinsic
    def _stack_copy(typingctx, like):
        """A C-contiguous 1-D array of GEMM_COPY_MAX float32 values' bytes (as many of
        like's dtype) on the calling function's stack, for _gemm_copied's transposed copy
        (no NRT allocation: it must not outlive that call)."""
        if not isinstance(like, types.Array):
            return None
        copy_type = types.Array(like.dtype, 1, "C")

        def codegen(context, builder, signature, args):
            from llvmlite import ir
            from numba.core import cgutils
            from numba.np.arrayobj import populate_array

            elt = context.get_data_type(like.dtype)
            itemsize = context.get_abi_sizeof(elt)
            size = GEMM_COPY_MAX * 4 // itemsize
            # 64-byte aligned, as the Cython kernels' buffer (BLAS's small kernels read
            # an unaligned b half again slower)
            raw = cgutils.alloca_once(builder, elt, size=size + 64 // itemsize)
            intp = context.get_value_type(types.intp)
            addr = builder.add(builder.ptrtoint(raw, intp), ir.Constant(intp, 63))
            data = builder.inttoptr(builder.and_(addr, ir.Constant(intp, -64)), raw.type)
            copy = context.make_array(copy_type)(context, builder)
            populate_array(
                copy,
                data=data,
                shape=[ir.Constant(intp, size)],
                strides=[ir.Constant(intp, itemsize)],
                itemsize=ir.Constant(intp, itemsize),
                meminfo=None,
            )
            return copy._getvalue()

        return copy_type(like), codegen

    def _swap_masks(bit):
        """The two shufflevector masks of one stage of a 16 x 16 register transpose.

        A transpose swaps the 4 bits of an element's row with the 4 of its column; the
        stage for ``bit`` swaps that one pair. Rows r0 (the bit clear) and r1 = r0 | s,
        s = 1 << bit, become, column c by column: new r0 = r0[c] where c's bit is clear,
        r1[c - s] where it is set; new r1 = r0[c + s] where clear, r1[c] where set (mask
        entries 16 + c pick the second vector's c)."""
        s = 1 << bit
        lo = [c if not c & s else 16 + c - s for c in range(16)]
        hi = [c + s if not c & s else 16 + c for c in range(16)]
        return lo, hi

    @intrinsic
    def _transpose16(typingctx, b, b_off, ldb, bt, bt_off, ldbt):
        """bt's 16 x 16 block at element bt_off (rows ldbt apart) = the transpose of b's
        at b_off (rows ldb apart): 16 vector loads, 4 stages of 16 two-vector shuffles
        (LLVM picks the host's permutes), 16 stores; a copy, so any order gives the same
        values as fastnn_blas.h's fnn_t16_f32."""
        # The loads and stores assume what _gemm_copied passes: two C-contiguous float
        # arrays of one dtype, bt writeable, offsets and row strides in elements. Any
        # other call is refused here, when it is compiled (a TypingError).
        floats = (types.float32, types.float64)
        if not (
            isinstance(b, types.Array)
            and isinstance(bt, types.Array)
            and b.dtype in floats
            and bt.dtype == b.dtype
            and b.layout == bt.layout == "C"
            and bt.mutable
            and all(isinstance(x, types.Integer) for x in (b_off, ldb, bt_off, ldbt))
        ):
            return None
        sig = types.void(b, b_off, ldb, bt, bt_off, ldbt)

        def codegen(context, builder, signature, args):
            from llvmlite import ir

            src, so, ls, dst, do, ld = args
            src_data = context.make_array(b)(context, builder, src).data
            dst_data = context.make_array(bt)(context, builder, dst).data
            elt = context.get_data_type(b.dtype)
            row_ptr = ir.VectorType(elt, 16).as_pointer()
            align = context.get_abi_sizeof(elt)  # the rows need not be aligned

            def row(data, off, stride, r):
                at = builder.add(off, builder.mul(stride, ir.Constant(stride.type, r)))
                return builder.bitcast(builder.gep(data, [at]), row_ptr)

            rows = []
            for r in range(16):
                load = builder.load(row(src_data, so, ls, r))
                load.align = align
                rows.append(load)
            mask = ir.VectorType(ir.IntType(32), 16)
            for bit in range(4):
                lo, hi = _swap_masks(bit)
                s = 1 << bit
                swapped = list(rows)
                for r0 in (r for r in range(16) if not r & s):
                    x, y = rows[r0], rows[r0 | s]
                    swapped[r0] = builder.shuffle_vector(x, y, ir.Constant(mask, lo))
                    swapped[r0 | s] = builder.shuffle_vector(x, y, ir.Constant(mask, hi))
                rows = swapped
            for r in range(16):
                store = builder.store(rows[r], row(dst_data, do, ld, r))
                store.align = align
            return context.get_dummy_value()

        return sig, codegen

    @jit
    def _transpose(b, bt):
        """bt (k, n) = b (n, k) transposed, both C-contiguous, in 16 x 16 blocks
        transposed in registers (a copy: fastnn_blas.h's fnn_transposed_f32 gives the
        same values)."""
        n, k = b.shape
        n16, k16 = n - n % 16, k - k % 16
        for j0 in range(0, n16, 16):
            for p0 in range(0, k16, 16):
                _transpose16(b, j0 * k + p0, k, bt, p0 * n + j0, n)
        # the edges: columns p >= k16 of the rows j < n16, every column of the others
        for j in range(n):
            for p in range(k16 if j < n16 else 0, k):
                bt[p, j] = b[j, p]

    @jit
    def _gemm_small_k(a, b, out, trans_a, trans_b, r0, r1, c0, c1):
        """``fastnn.reference.blas.gemm_small_k``: each element of the tile summed in
        the order p = 0 .. k - 1 in the dtype, 1 <= k <= GEMM_SMALL_K; the k rows of
        op(b) copied into a panel on the stack first, _SMALL_PANEL columns at a time
        (fastnn_simd.h's loop; nothing allocated, as a training step must not)."""
        k = a.shape[0] if trans_a else a.shape[1]
        panel = _stack_panel(out)
        for j0 in range(c0, c1, _SMALL_PANEL):
            # Unsigned column indices: with signed ones Numba wraps negative indices
            # around, a test per element that keeps LLVM from vectorizing (5x slower).
            # Indices, not row views: a view per row would take array references.
            u0 = np.uint64(j0)
            w = np.uint64(min(_SMALL_PANEL, c1 - j0))
            for p in range(k):
                for j in range(w):
                    panel[p, j] = b[u0 + j, p] if trans_b else b[p, u0 + j]
            for i in range(r0, r1):
                x0 = a[0, i] if trans_a else a[i, 0]
                if k == 1:
                    for j in range(w):
                        out[i, u0 + j] = x0 * panel[0, j]
                    continue
                x1 = a[1, i] if trans_a else a[i, 1]
                if k == 2:
                    for j in range(w):
                        out[i, u0 + j] = x0 * panel[0, j] + x1 * panel[1, j]
                    continue
                x2 = a[2, i] if trans_a else a[i, 2]
                if k == 3:
                    for j in range(w):
                        out[i, u0 + j] = x0 * panel[0, j] + x1 * panel[1, j] + x2 * panel[2, j]
                    continue
                x3 = a[3, i] if trans_a else a[i, 3]
                for j in range(w):
                    out[i, u0 + j] = (
                        x0 * panel[0, j] + x1 * panel[1, j] + x2 * panel[2, j] + x3 * panel[3, j]
                    )

    @jit_inline
    def _gemm_tile(a, b, out, trans_a, trans_b, r0, r1, c0, c1):
        """out[r0:r1, c0:c1] = op(a)[r0:r1] @ op(b)[:, c0:c1], one BLAS call of
        ``fastnn.reference.blas.gemm``: out.T = op(b).T op(a).T, b first, no copies (or,
        for an inner dimension 1 <= k <= GEMM_SMALL_K, ``_gemm_small_k``)."""
        br, bc = b.shape
        ar, ac = a.shape
        k = bc if trans_b else br
        if k >= 1 and k <= GEMM_SMALL_K:
            _gemm_small_k(a, b, out, trans_a, trans_b, r0, r1, c0, c1)
            return
        _xgemm(
            np.int64(_TRANS if trans_b else _NOTRANS),
            np.int64(_TRANS if trans_a else _NOTRANS),
            c1 - c0,
            r1 - r0,
            k,
            b,
            np.int64(c0 * bc if trans_b else c0),
            bc,
            a,
            np.int64(r0 if trans_a else r0 * ac),
            ac,
            out,
            np.int64(r0 * out.shape[1] + c0),
            out.shape[1],
        )

    @jit_inline
    def _gemm_tile_i(a, b, out, trans_a, trans_b, rows, cols, t):
        """Tile t of the (rows, cols) grid (row by row of tiles): one BLAS call."""
        m, n = out.shape
        i, j = t // cols, t % cols
        _gemm_tile(
            a,
            b,
            out,
            trans_a,
            trans_b,
            gemm_tile_edge(m, rows, i),
            gemm_tile_edge(m, rows, i + 1),
            gemm_tile_edge(n, cols, j),
            gemm_tile_edge(n, cols, j + 1),
        )

    @jit_parallel
    def _gemm_parallel(a, b, out, trans_a, trans_b, rows, cols):
        """The tiles of one product on Numba's threads (as many as
        ``numba.get_num_threads()``: the caller sets it, outside compiled code, where
        setting it does not prevent caching), and so does the chunk size: 1, so that a
        thread that finishes early claims the next tile (``gemm_claim``'s order)."""
        for t in _prange(rows * cols):
            _gemm_tile_i(a, b, out, trans_a, trans_b, rows, cols, gemm_tile_claim(t, rows * cols))

    @jit_parallel
    def _share_parallel(out, chunks):
        """The packing chunks of a shared op(a) (_share, out's dtype) on Numba's
        threads."""
        for t in _prange(chunks):
            _share_pack(out, t)

    @jit
    def gemm_threads(a, b, out, trans_a, trans_b, n_threads):
        """out = op(a) @ op(b) for C-contiguous row-major a, b, out (beta = 0).

        Exactly the calls ``fastnn.reference.blas.gemm`` makes through ctypes (its
        tiles, each a column-major product out.T = op(b).T op(a).T, b first; a small
        float32 a @ b^T on a transposed copy of b, on this function's stack); the tiles
        run one after the other, or side by side on Numba's threads when ``n_threads``
        > 1 (the caller sets their number with ``numba.set_num_threads``) and the
        product has GEMM_SPLIT_FLOPS or more (the small-matrix cut's tiles of a smaller
        one take a few microseconds each); the same bits either way.
        """
        m, n = out.shape
        k = a.shape[0] if trans_a else a.shape[1]
        if gemm_copy_rule(m, n, k, trans_a, trans_b, GEMM_SMALL_MNK, out.itemsize == 4):
            _gemm_copied(a, b, out, n_threads)
        else:
            _gemm_run(a, b, out, trans_a, trans_b, n_threads)

    @jit
    def _gemm_copied(a, b, out, n_threads):
        """out = a @ b.T as a @ bt, bt the transposed copy of b on this function's stack
        (the buffer reserved only where the copy is made)."""
        k, n = a.shape[1], out.shape[1]
        bt = _stack_copy(out)[: k * n].reshape((k, n))
        _transpose(b, bt)
        _gemm_run(a, bt, out, False, False, n_threads)

    @jit
    def _gemm_run(a, b, out, trans_a, trans_b, n_threads):
        """gemm_threads' tiles, b as given."""
        m, n = out.shape
        k = a.shape[0] if trans_a else a.shape[1]
        rows, cols = gemm_tile_grid(
            m, n, k, trans_a, trans_b, GEMM_SMALL_MNK, out.itemsize == 4, GEMM_OWN
        )
        if rows * cols == 1:
            _gemm_tile(a, b, out, trans_a, trans_b, 0, m, 0, n)
            return
        chunks = 0
        if GEMM_OWN and rows == 1 and k > GEMM_SMALL_K:
            # one row of tiles: op(a) packed once for them all (fastnn_gemm.h), in
            # chunks that the threads share out as they do the tiles
            chunks = _share(trans_a, m, n, k, a, a.shape[1], out, n, gemm_tile_narrowest(n, cols))
        if n_threads <= 1 or 2.0 * m * n * k < GEMM_SPLIT_FLOPS:
            for t in range(chunks):
                _share_pack(out, t)
            for t in range(rows * cols):
                _gemm_tile_i(a, b, out, trans_a, trans_b, rows, cols, t)
        else:
            if chunks > 0:
                _share_parallel(out, chunks)
            _gemm_parallel(a, b, out, trans_a, trans_b, rows, cols)
        if chunks > 0:
            _unshare(out)

    @jit
    def gemm(a, b, out, trans_a, trans_b):
        """out = op(a) @ op(b) on one thread (``gemm_threads`` with one thread)."""
        gemm_threads(a, b, out, trans_a, trans_b, 1)
else:
    _SMALL_PANEL = 256

    def stack_panel(like):
        """A (GEMM_SMALL_K, _SMALL_PANEL) array of like's dtype (pure-Python mode)."""
        return np.empty((GEMM_SMALL_K, _SMALL_PANEL), like.dtype)

    def gemm_threads(a, b, out, trans_a, trans_b, n_threads):
        """out = op(a) @ op(b) (pure-Python mode: the reference's call itself)."""
        from ..reference.blas import gemm as reference_gemm

        reference_gemm(a, b, out, trans_a=trans_a, trans_b=trans_b)

    def gemm(a, b, out, trans_a, trans_b):
        """out = op(a) @ op(b) (pure-Python mode: the reference's call itself)."""
        gemm_threads(a, b, out, trans_a, trans_b, 1)


# --- NumPy's own float64 loops: tanh, exp, log ---------------------------------------

# NumPy's float64 tanh (a SIMD polynomial, within 1 ULP) and glibc's (up to 2 ULP) differ
# by up to 3 ULP, and the reference's derivative 1 - tanh^2 z magnifies any such
# difference by 2 tanh^2 / (1 - tanh^2) (thousands of ULP for |z| > 4). Only NumPy's own
# loop reproduces the reference, so the kernels call it, through the ufunc loop access
# NumPy provides for JIT compilers (numpy_loops.py). exp and log of the softmax rows of
# the cross-entropies go through NumPy's loops too: the reference's bits, and a vector
# loop over a batch's rows at once instead of a libm call per value.
_LOOP_NAMES = ("tanh", "exp", "log")


if not DISABLE_JIT:
    _loop_args = {}

    def _numpy_loop_intrinsic(name):
        """An intrinsic (buf, lo, n): buf[lo:lo + n] = np.<name>(buf[lo:lo + n]) in place
        by NumPy's float64 loop (buf a C-contiguous float64 1-D array)."""
        # Named symbols, registered at import (the loop and its context/auxdata pair):
        # tanh's names are those of earlier versions, so their cached kernels still link.
        loop_sym, args_sym = f"fastnn_numpy_{name}_f64_loop", f"fastnn_numpy_{name}_f64_args"
        fn, ctx, aux = loop_addresses(name)
        _loop_args[name] = (ctypes.c_void_p * 2)(ctx, aux)
        _llvm.add_symbol(loop_sym, fn)
        _llvm.add_symbol(args_sym, ctypes.addressof(_loop_args[name]))

        @intrinsic
        def loop(typingctx, buf, lo, n):
            sig = types.void(buf, lo, n)

            def codegen(context, builder, signature, args):
                i8p = _ir.IntType(8).as_pointer()
                i32, i64 = _ir.IntType(32), _ir.IntType(64)
                module = builder.module
                fnty = _ir.FunctionType(
                    i32, [i8p, i8p.as_pointer(), i64.as_pointer(), i64.as_pointer(), i8p]
                )
                f = _cgutils.get_or_insert_function(module, fnty, loop_sym)
                gv = module.globals.get(args_sym)
                if gv is None:  # declared here, defined by the symbol registered at import
                    gv = _ir.GlobalVariable(module, _ir.ArrayType(i8p, 2), args_sym)
                zero = i32(0)
                ctx_v = builder.load(builder.gep(gv, [zero, zero]))
                aux_v = builder.load(builder.gep(gv, [zero, i32(1)]))
                arr = context.make_array(buf)(context, builder, args[0])
                start = builder.sext(args[1], i64) if args[1].type.width < 64 else args[1]
                ptr = builder.bitcast(builder.gep(arr.data, [start]), i8p)
                data = _cgutils.alloca_once(builder, i8p, size=2)
                builder.store(ptr, data)
                builder.store(ptr, builder.gep(data, [i32(1)]))
                strides = _cgutils.alloca_once(builder, i64, size=2)
                builder.store(i64(8), strides)
                builder.store(i64(8), builder.gep(strides, [i32(1)]))
                builder.call(f, [ctx_v, data, _slot(builder, args[2]), strides, aux_v])
                return context.get_dummy_value()

            return sig, codegen

        return loop

    _numpy_tanh_loop, _numpy_exp_loop, _numpy_log_loop = map(_numpy_loop_intrinsic, _LOOP_NAMES)

    @jit
    def tanh_f64(buf, n):
        """buf[:n] = np.tanh(buf[:n]) in place; buf is a C-contiguous float64 1-D array."""
        _numpy_tanh_loop(buf, np.int64(0), np.int64(n))

    @jit_inline
    def exp_f64(buf, lo, n):
        """buf[lo:lo + n] = np.exp(buf[lo:lo + n]) in place (C-contiguous float64 buf)."""
        _numpy_exp_loop(buf, np.int64(lo), np.int64(n))

    @jit_inline
    def log_f64(buf, lo, n):
        """buf[lo:lo + n] = np.log(buf[lo:lo + n]) in place (C-contiguous float64 buf)."""
        _numpy_log_loop(buf, np.int64(lo), np.int64(n))
else:

    def tanh_f64(buf, n):
        """buf[:n] = np.tanh(buf[:n]) in place (pure-Python mode)."""
        np.tanh(buf[:n], out=buf[:n])

    def exp_f64(buf, lo, n):
        """buf[lo:lo + n] = np.exp(buf[lo:lo + n]) in place (pure-Python mode)."""
        np.exp(buf[lo : lo + n], out=buf[lo : lo + n])

    def log_f64(buf, lo, n):
        """buf[lo:lo + n] = np.log(buf[lo:lo + n]) in place (pure-Python mode)."""
        np.log(buf[lo : lo + n], out=buf[lo : lo + n])


# --- SciPy's erfc (scipy_special.py says why) ------------------------------------------
_ERFC = "fastnn_scipy_erfc"

if not DISABLE_JIT:
    _llvm.add_symbol(_ERFC, erfc_address())
    _scipy_erfc = types.ExternalFunction(_ERFC, types.float64(types.float64, types.intc))

    @jit_inline
    def erfc_f64(x):
        """SciPy's erfc(x), x float64."""
        return _scipy_erfc(x, 0)
else:
    import scipy.special as _special

    def erfc_f64(x):
        """SciPy's erfc(x) (pure-Python mode)."""
        return float(_special.erfc(x))


@jit_inline
def scaled_count(k, b):
    """rint(b k), half to even, exactly, for 0 <= k < 2^52 and 0 <= b <= 1: a tie that
    rounding the product made is broken by Dekker's exact error of the product."""
    prod = b * k
    r = (prod + 4503599627370496.0) - 4503599627370496.0  # to an integer, half to even
    c = 134217729.0 * b  # 2^27 + 1
    bh = c - (c - b)
    bl = b - bh
    d = 134217729.0 * k
    kh = d - (d - k)
    kl = k - kh
    err = ((bh * kh - prod) + bh * kl + bl * kh) + bl * kl
    tie = abs(prod - r) == 0.5
    return (prod + 0.5 if err > 0.0 else (prod - 0.5 if err < 0.0 else r)) if tie else r


def still_decay(x, b, z):
    """``fl(b x) + z`` for a float32/float64 scalar ``x`` zero or subnormal, ``0 <= b <=
    1`` and ``z`` = +-0 (what a zero gradient adds), with no subnormal arithmetic:
    ``x = +-k 2^emin``, so ``fl(b x) = +-rint(b k) 2^emin``, and a result of 0 takes
    IEEE's sign of ``+-0 + z`` (docs/spec.md §5, "Subnormal moments")."""
    f32 = x.dtype == np.float32
    ut = np.uint32 if f32 else np.uint64
    sign, frac = ut(1 << (31 if f32 else 63)), ut((1 << (23 if f32 else 52)) - 1)
    xb, zb = as_bits(x), as_bits(z)
    r = ut(scaled_count(float(xb & frac), float(b)))
    return of_bits(ut(r | (xb & sign)) if r != 0 else ut(xb & zb & sign))


@overload(still_decay)
def _still_decay_overload(x, b, z):
    f32 = x == types.float32
    ut = np.uint32 if f32 else np.uint64
    sign, frac = ut(1 << (31 if f32 else 63)), ut((1 << (23 if f32 else 52)) - 1)

    def impl(x, b, z):
        xb, zb = as_bits(x), as_bits(z)
        r = ut(scaled_count(float(xb & frac), float(b)))
        return of_bits(ut(r | (xb & sign)) if r != 0 else ut(xb & zb & sign))

    return impl


@jit_inline
def np_maximum(a, b):
    """np.maximum of two scalars: a where it is larger or NaN, else b (a tie, -0 against
    +0, gives b)."""
    return a if (a > b or a != a) else b


def zeroed_where(c, x):
    """+0.0 where ``c``, else the float32/float64 scalar ``x``: the still lanes' state
    as their arithmetic sees it (docs/spec.md §5, "Subnormal moments")."""
    return x.dtype.type(0.0) if c else x


@overload(zeroed_where)
def _zeroed_where_overload(c, x):
    ut = np.uint32 if x == types.float32 else np.uint64

    # A bit mask, not ``0.0 if c else x``: Numba compiles that to a branch whose phi
    # LLVM may turn into ``b * 0.0`` and ``b * x`` for the product ``b * (...)`` that
    # follows, and the vector loop then multiplies every lane's x, subnormals included
    # (a microcode assist each on Intel cores).
    def impl(c, x):
        return of_bits(ut(as_bits(x) & (ut(c) - ut(1))))

    return impl


@jit_inline
def still_pmin(x, step, den):
    """The smallest |p| that a step of at most ``bound = step tiny / den`` cannot move,
    in ``x``'s dtype (tiny: its smallest normal): ``p - d == p`` when ``|d| <= bound`` is
    below half the spacing of the floats next to ``p`` (``>= |p| 2^-(MANT + 2)``);
    infinity when no such bound is known. ``step / den`` first, then the power of two
    ``tiny 2^(MANT + 3)``: no intermediate underflows while the bound matters (``step
    tiny`` is subnormal in float64, a slow microcode assist, and 0 for tiny rates), as
    fastnn_simd.h's fnn_still_pmin."""
    tiny, eps = float_limits(x)
    big = step / den * (tiny * 8.0 / eps)  # bound 2^(MANT + 3)
    return cast_like(x, max(big, tiny)) if big < 1e300 else cast_like(x, np.inf)
