"""Quick checks of the Cython backend's build: what the equivalence suite assumes.

The enum in activations_cython.pxd, the names and signatures of every raw kernel, the
C-level API other Cython modules cimport, read-only inputs, the GIL released around
the C call, sums that follow NumPy's pairwise order past its 128-value block and
8192-value cast buffer (bit for bit: the Cython reductions take NumPy's order), the
CPU-dispatched loops of fastnn_simd.h (every instruction-set version gives the same
bits), and the whole-epoch kernel: its entry checks and its equality with the step
path for the activations and losses tests/test_epoch.py does not cover.
"""

import ctypes
import importlib
import inspect
import shutil
import subprocess
import sysconfig
import threading
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn import _epoch
from fastnn._backend import FAMILIES, MODEL_FAMILIES
from fastnn._kernels import codes, epoch_args
from fastnn.optim import Adam, AdamW, Momentum, RMSProp
from kernels._support import check_bce, check_ce, check_sparse_ce

KERNELS = Path(codes.__file__).parent
DTYPES = (np.float32, np.float64)


def cython_module(family):
    return importlib.import_module(f"fastnn._kernels.{family}_cython")


def reference_module(family):
    return importlib.import_module(f"fastnn.reference.{family}")


@pytest.mark.parametrize("family", FAMILIES + MODEL_FAMILIES)
def test_names_and_signatures_match_the_reference(family):
    cy, ref = cython_module(family), reference_module(family)
    assert cy.__all__ == ref.__all__
    for name in ref.__all__:
        got = list(inspect.signature(getattr(cy, name)).parameters)
        want = list(inspect.signature(getattr(ref, name)).parameters)
        assert got == want, f"{family}.{name}: {got} != {want}"


@pytest.mark.parametrize("family", FAMILIES + MODEL_FAMILIES)
def test_every_kernel_has_a_cimportable_c_level_twin(family):
    """c_<name> for float and double is exported for cimport (its .pxd declares it).

    The activations without a C loop of their own (gelu, silu...) are reached at C level
    through c_by_code / c_derivative_by_code and the scalar c_g / c_g_d, by code; every
    optimizer through c_optimizer_step, by code (the .pxd need not declare a new one's).
    The csr kernels are fused over the index dtype too (int32, int64): one twin per pair.
    """
    cy = cython_module(family)
    exported = set(cy.__pyx_capi__)
    specs = ("0_0", "0_1", "1_0", "1_1") if family == "csr" else ("0", "1")
    for name in cy.__all__:
        for spec in specs:
            twin = f"__pyx_fuse_{spec}c_{name}"
            if twin not in exported and family == "activations":
                by_code = "derivative_by_code" if name.endswith("_derivative") else "by_code"
                twin = f"__pyx_fuse_{spec}c_{by_code}"
                assert {"c_g", "c_g_d"} <= exported
            if twin not in exported and family == "optimizers" and name.endswith("_step"):
                twin = f"__pyx_fuse_{spec}c_optimizer_step"
            assert twin in exported, (family, name, spec)
    assert (KERNELS / f"{family}_cython.pxd").is_file()


@pytest.mark.parametrize("dtype", DTYPES)
def test_read_only_inputs_are_accepted(dtype):
    raw = fastnn.backend("cython")._raw
    z = np.array([[-1.0, 0.5], [2.0, -0.0]], dtype=dtype)
    w = np.eye(2, dtype=dtype)
    b = np.ones(2, dtype=dtype)
    for arr in (z, w, b):
        arr.flags.writeable = False
    out = np.empty_like(z)
    raw.relu(z.reshape(-1), out.reshape(-1))
    np.testing.assert_array_equal(out, [[0, 0.5], [2, 0]])
    zz, a = np.empty_like(z), np.empty_like(z)
    raw.dense_forward(z, w, b, codes.IDENTITY, 0.0, zz, a)
    np.testing.assert_array_equal(a, z + 1)


# Calls of the long kernel the GIL test makes at most: the main thread must run in the
# middle of one of them (a kernel holding the GIL would let it run only between calls).
GIL_CALLS = 1000


def test_kernels_release_the_gil():
    """While a kernel runs in a thread, the main thread runs Python: it sees the
    kernel's output half written, no timing involved.

    The worker fills ``out`` with a sentinel, counts a call as started, runs the kernel
    (which writes ``out`` front to back, in place), counts the call as finished, and
    repeats. The main thread reads the counters, ``out[0]``, ``out[-1]``, and the
    counters again. The same call started and not finished around both reads, with
    ``out[0]`` written and ``out[-1]`` not yet, means the main thread executed bytecode,
    so held the GIL, in the middle of that kernel call. A kernel that held the GIL would
    let it run only between calls, where ``out`` is all sentinel (before the call) or
    all written (after it): then no call of GIL_CALLS is ever seen half-way and the test
    fails. Load only delays the moment it is seen."""
    kernels = fastnn.backend("cython")
    z = np.linspace(-3, 3, 2_000_000)
    out = np.empty_like(z)
    assert kernels.tanh_derivative(z, out=out) is out  # written in place, no temporary
    sentinel = -1.0  # 1 - tanh(z)^2 is never negative
    calls = {"started": 0, "finished": 0}
    stop = threading.Event()

    def work():
        for _ in range(GIL_CALLS):
            if stop.is_set():
                break
            out.fill(sentinel)
            calls["started"] += 1
            kernels.tanh_derivative(z, out=out)
            calls["finished"] += 1

    worker = threading.Thread(target=work)
    worker.start()
    seen = False
    try:
        while not seen and worker.is_alive():
            started, finished = calls["started"], calls["finished"]
            first, last = out[0], out[-1]  # in this order: first written, last not yet
            same_call = (
                calls["started"] == started == finished + 1 and calls["finished"] == finished
            )
            seen = same_call and first != sentinel and last == sentinel
    finally:
        stop.set()
        worker.join()
    assert seen, f"the main thread never ran during one of {calls['finished']} calls"


# --- sums in NumPy's order, past the sizes the equivalence suite draws ------------------


def _pair():
    return fastnn.backend("cython"), fastnn.backend("numpy")


def _values(n, dtype, seed, spread=6):
    """Values over many orders of magnitude, so a different order changes the sum."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) * 10.0 ** rng.uniform(-spread, spread, n)).astype(dtype)


REDUCTION_SIZES = [129, 1000, 8193, 100_003]


@pytest.mark.parametrize("n", REDUCTION_SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_float_reductions_are_bit_identical(dtype, n):
    """mse and squared_norm: products and differences in the array dtype, summed in
    float64 in NumPy's order, nothing else: bit for bit, as the contract promises."""
    cy, ref = _pair()
    p, y = _values(n, dtype, 1), _values(n, dtype, 2)
    assert cy.mse(p, y) == ref.mse(p, y)
    assert cy.squared_norm(p) == ref.squared_norm(p)


@pytest.mark.parametrize("n", REDUCTION_SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_reductions_are_within_the_stated_bounds(dtype, n):
    """The cross-entropies' terms go through exp and log from different libraries
    (NumPy's SIMD loops, which differ with the CPU -- AVX-512 hosts round some values
    differently -- and the C library's): exactness is not promised. Their means are
    held to the stated bounds (tests/kernels/_support.py, rule 6)."""
    cy, ref = _pair()
    z, t = _values(n, dtype, 3, spread=1), np.abs(_values(n, dtype, 4, spread=0)) % 1
    check_bce(
        cy.binary_cross_entropy(z, t),
        ref.binary_cross_entropy(z, t),
        z,
        t,
        f"binary_cross_entropy n={n}",
    )
    logits = _values(n - n % 3, dtype, 5, spread=1).reshape(-1, 3)
    labels = np.random.default_rng(6).integers(0, 3, logits.shape[0])
    check_sparse_ce(
        cy.cross_entropy(logits, labels),
        ref.cross_entropy(logits, labels),
        logits,
        labels,
        f"cross_entropy (labels) n={n}",
    )
    onehot = np.eye(3, dtype=dtype)[labels]
    check_ce(
        cy.cross_entropy(logits, onehot),
        ref.cross_entropy(logits, onehot),
        logits,
        onehot,
        f"cross_entropy (one-hot) n={n}",
    )


@pytest.mark.parametrize("n_out", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_axis0_sums_are_bit_identical(dtype, n_out):
    """db and the batch-norm statistics: pairwise down a single column, else row by row."""
    cy, ref = _pair()
    m = 3001
    x = _values(m * 4, dtype, 7, spread=1).reshape(m, 4)
    w = _values(4 * n_out, dtype, 8, spread=1).reshape(4, n_out)
    z, a = ref.dense_forward(x, w, np.zeros(n_out, dtype), "relu")
    da = _values(m * n_out, dtype, 9).reshape(m, n_out)
    for got, want in zip(
        cy.dense_backward(x, z, a, da, "relu"), ref.dense_backward(x, z, a, da, "relu")
    ):
        np.testing.assert_array_equal(got, want)
    xb = _values(m * n_out, dtype, 10, spread=2).reshape(m, n_out)
    g, bt = np.ones(n_out, dtype), np.zeros(n_out, dtype)
    stats = [np.zeros(n_out, dtype), np.ones(n_out, dtype)]
    ref_stats = [s.copy() for s in stats]
    got = cy.batch_norm_train(xb, g, bt, *stats)
    want = ref.batch_norm_train(xb, g, bt, *ref_stats)
    for arr_got, arr_want in zip(list(got) + stats, list(want) + ref_stats):
        np.testing.assert_array_equal(arr_got, arr_want)
    for arr_got, arr_want in zip(
        cy.batch_norm_backward(xb, got[1], g, got[2]),
        ref.batch_norm_backward(xb, got[1], g, got[2]),
    ):
        np.testing.assert_array_equal(arr_got, arr_want)


# --- fastnn_simd.h: every instruction-set version gives the same bits -------------------

# The header's functions, with T the array type; wrappers with these arguments are
# compiled below for each instruction set. Flags (int) are chosen per call.
SIMD_FUNCS = {
    "sgd": "T* param, const T* grad, ptrdiff_t n, T lr, T wd, int decay",
    "momentum": "T* param, const T* grad, T* velocity, ptrdiff_t n, T lr, T beta, T keep, "
    "T wd, int decay, int nesterov",
    "adaptive": "T* param, const T* grad, T* sq, ptrdiff_t n, T lr, T rho, T rest, T eps, "
    "T wd, int decay, int inside, int rmsprop",
    "adam": "T* param, const T* grad, T* m, T* v, ptrdiff_t n, T lr, T b1, T b2, T rest1, "
    "T rest2, T corr1, T corr2, T eps, T wd, T shrink, int decay, int decoupled",
    "adamax": "T* param, const T* grad, T* m, T* u, ptrdiff_t n, T c, T b1, T rest1, T b2, "
    "T eps, T wd, int decay",
    "scale": "T* x, ptrdiff_t n, T f",
    "sq_leaf": "const T* x, ptrdiff_t n",
    "bias_act": "T* z, const T* b, ptrdiff_t m, ptrdiff_t k, int act, T alpha, T* a",
    "act_grad_bias": "const T* da, const T* z, ptrdiff_t m, ptrdiff_t k, int act, T alpha, "
    "T* dz, T* db",
    "bn_sums": "const T* x, ptrdiff_t m, ptrdiff_t k, const double* center, double* total, "
    "int squares",
    "bn_normalise": "const T* x, ptrdiff_t m, ptrdiff_t k, const double* mean, "
    "const double* inv, const T* gamma, const T* beta, T* x_hat, T* out",
    "bn_grad_sums": "const T* dout, const T* x_hat, ptrdiff_t m, ptrdiff_t k, double* db, "
    "double* dg",
    "bn_dx": "const T* dout, const T* x_hat, ptrdiff_t m, ptrdiff_t k, const double* scale, "
    "const double* db, const double* dg, T* dx",
    "gemm_small_k": "int trans_a, int trans_b, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, "
    "const T* a, ptrdiff_t lda, const T* b, ptrdiff_t ldb, T* c, ptrdiff_t ldc",
}
SIMD_RETURNS = {"bias_act": "int", "act_grad_bias": "int", "sq_leaf": "double"}
# The instruction sets of the header's target_clones, as compiler flags.
ISAS = {"default": [], "avx2": ["-mavx2"], "avx512f": ["-mavx512f"]}


def _cpu_flags():
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def _simd_source():
    lines = ["#define FNN_CLONES", '#include "fastnn_simd.h"']
    for tname, suffix in (("float", "f32"), ("double", "f64")):
        for name, params in SIMD_FUNCS.items():
            params = params.replace("T", tname)
            args = ", ".join(p.split()[-1].lstrip("*") for p in params.split(","))
            ret = SIMD_RETURNS.get(name, "void")
            lines.append(
                f"{ret} t_{name}_{suffix}({params}) "
                f"{{ {'' if ret == 'void' else 'return '}fnn_{name}_{suffix}({args}); }}"
            )
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def simd_versions(tmp_path_factory):
    """{isa: ctypes library} of the header built once per instruction set this CPU runs,
    with setup.py's floating-point flags."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None or not _cpu_flags() >= {"avx2"}:
        pytest.skip("needs a C compiler and an x86-64 CPU with AVX2")
    tmp = tmp_path_factory.mktemp("simd")
    src = tmp / "simd_versions.c"
    src.write_text(_simd_source())
    libs = {}
    for isa, flags in ISAS.items():
        if isa != "default" and isa not in _cpu_flags():
            continue
        so = tmp / f"simd_{isa}.so"
        subprocess.run(
            [
                cc,
                "-O3",
                "-ffp-contract=off",
                "-fno-math-errno",
                "-fPIC",
                "-shared",
                *flags,
                f"-I{KERNELS}",
                str(src),
                "-o",
                str(so),
            ],
            check=True,
            capture_output=True,
        )
        libs[isa] = ctypes.CDLL(str(so))
    return libs


def _special_values(n, dtype, seed):
    """Values over many magnitudes with NaN, infinities, signed zeros and subnormals."""
    rng = np.random.default_rng(seed)
    x = _values(n, dtype, seed, spread=3)
    specials = np.array(
        [
            np.nan,
            np.inf,
            -np.inf,
            0.0,
            -0.0,
            np.finfo(dtype).smallest_subnormal,
            -np.finfo(dtype).smallest_subnormal,
            np.finfo(dtype).max,
        ],
        dtype,
    )
    where = rng.choice(n, size=n // 10, replace=False)
    x[where] = rng.choice(specials, size=where.size)
    return x


def _still_state(n, dtype, seed):
    """A state decayed into the smallest subnormals (both signs, some zeros), the values
    that gradients of exactly 0 leave for good: most lanes of the loops' "still" path."""
    rng = np.random.default_rng(seed)
    k = rng.integers(-9, 10, n).astype(dtype)
    return k * np.finfo(dtype).smallest_subnormal


def _same_bits(a, b):
    """Equal bit for bit, except that any NaN equals any NaN (x86 may pick either NaN
    operand's payload when both are NaN)."""
    nan = np.isnan(a)
    return np.array_equal(nan, np.isnan(b)) and np.array_equal(
        a[~nan].view(f"u{a.itemsize}"), b[~nan].view(f"u{b.itemsize}")
    )


def _simd_call(lib, name, dtype, arrays, scalars, flags):
    ct = ctypes.c_float if dtype == np.float32 else ctypes.c_double
    suffix = "f32" if dtype == np.float32 else "f64"
    fn = getattr(lib, f"t_{name}_{suffix}")
    fn.restype = {"int": ctypes.c_int, "double": ctypes.c_double}.get(SIMD_RETURNS.get(name))
    args = []
    for param in SIMD_FUNCS[name].split(","):
        kind, pname = param.split()[-2:]
        if pname.startswith("*") or kind.endswith("*"):
            args.append(arrays[pname.lstrip("*")].ctypes.data_as(ctypes.c_void_p))
        elif kind == "ptrdiff_t":
            args.append(ctypes.c_ssize_t(scalars[pname]))
        elif kind == "int":
            args.append(ctypes.c_int(scalars.get(pname, flags.get(pname, 0))))
        else:
            args.append(ct(scalars[pname]))
    return fn(*args)


def _simd_cases(dtype):
    n = 1013  # not a multiple of any vector width: the remainder loops run too
    pos = lambda seed: np.abs(_special_values(n, dtype, seed))  # noqa: E731
    hyper = {
        "lr": 1e-3,
        "wd": 1e-2,
        "beta": 0.9,
        "keep": 0.7,
        "rho": 0.9,
        "rest": 0.1,
        "eps": 1e-8,
        "b1": 0.9,
        "b2": 0.999,
        "rest1": 0.1,
        "rest2": 0.001,
        "corr1": 0.19,
        "corr2": 0.002,
        "shrink": 1e-5,
        "c": 5e-3,
        "f": 0.37,
        "n": n,
    }
    opt = {"param": _special_values(n, dtype, 1), "grad": _special_values(n, dtype, 2)}
    for decay in (0, 1):
        yield "sgd", dict(opt), hyper, {"decay": decay}
        for nesterov in (0, 1):
            yield (
                "momentum",
                {**opt, "velocity": _special_values(n, dtype, 3)},
                hyper,
                {"decay": decay, "nesterov": nesterov},
            )
        for inside in (0, 1):
            for rmsprop in (0, 1):
                yield (
                    "adaptive",
                    {**opt, "sq": pos(4)},
                    hyper,
                    {"decay": decay, "inside": inside, "rmsprop": rmsprop},
                )
        for decoupled in (0, 1):
            yield (
                "adam",
                {**opt, "m": _special_values(n, dtype, 5), "v": pos(6)},
                hyper,
                {"decay": decay and not decoupled, "decoupled": decoupled},
            )
        yield (
            "adamax",
            {**opt, "m": _special_values(n, dtype, 5), "u": pos(6)},
            hyper,
            {"decay": decay},
        )
    # the still loops: gradients +-0 in most lanes, states at the smallest subnormals
    still = {"param": _special_values(n, dtype, 21), "grad": _special_values(n, dtype, 22)}
    still["grad"][np.random.default_rng(23).random(n) < 0.8] = 0.0
    still["grad"][::7] = -0.0
    for nesterov in (0, 1):
        yield (
            "momentum",
            {**still, "velocity": _still_state(n, dtype, 24)},
            hyper,
            {"nesterov": nesterov},
        )
    for inside in (0, 1):
        yield (
            "adaptive",
            {**still, "sq": np.abs(_still_state(n, dtype, 25))},
            hyper,
            {"inside": inside, "rmsprop": 1},
        )
    yield "adam", {**still, "m": _still_state(n, dtype, 26), "v": pos(27)}, hyper, {}
    yield (
        "adam",
        {**still, "m": _still_state(n, dtype, 28), "v": _still_state(n, dtype, 29)},
        hyper,
        {},
    )
    yield "adamax", {**still, "m": _still_state(n, dtype, 30), "u": pos(31)}, hyper, {}
    yield "scale", {"x": _special_values(n, dtype, 7)}, hyper, {}
    for size in (3, 8, 37, 128):  # one leaf of the pairwise sum holds up to 128 values
        yield "sq_leaf", {"x": _values(size, dtype, size)}, {"n": size}, {}
        yield "sq_leaf", {"x": _special_values(size, dtype, size)}, {"n": size}, {}
    m, k = 9, 37
    for act in (codes.IDENTITY, codes.RELU, codes.LEAKY_RELU):
        shape = {"m": m, "k": k, "act": act, "alpha": 0.01}
        z, b = _special_values(m * k, dtype, 8), _special_values(k, dtype, 9)
        yield "bias_act", {"z": z, "b": b, "a": np.zeros_like(z)}, shape, {}
        yield "bias_act", {"z": z, "b": b, "a": "z"}, shape, {}  # a is z
        da = _special_values(m * k, dtype, 10)
        yield (
            "act_grad_bias",
            {"da": da, "z": z, "dz": np.zeros_like(z), "db": np.zeros(k, dtype)},
            shape,
            {},
        )
        yield (
            "act_grad_bias",
            {"da": da, "z": z, "dz": "da", "db": np.zeros(k, dtype)},
            shape,
            {},
        )  # dz is da
    # batch normalisation: column sums in double, the normalisation and the input gradient
    x, g = _special_values(m * k, dtype, 11), _special_values(m * k, dtype, 12)
    wide = {name: _special_values(k, np.float64, 13 + i) for i, name in enumerate("abcd")}
    for squares in (0, 1):
        yield (
            "bn_sums",
            {"x": x, "center": wide["a"], "total": np.zeros(k)},
            {"m": m, "k": k},
            {"squares": squares},
        )
    norm = {"x": x, "mean": wide["a"], "inv": np.abs(wide["b"])}
    norm.update(gamma=_special_values(k, dtype, 17), beta=_special_values(k, dtype, 18))
    yield (
        "bn_normalise",
        {**norm, "x_hat": np.zeros_like(x), "out": np.zeros_like(x)},
        {
            "m": m,
            "k": k,
        },
        {},
    )
    yield "bn_normalise", {**norm, "x_hat": np.zeros_like(x), "out": "x"}, {"m": m, "k": k}, {}
    yield (
        "bn_grad_sums",
        {"dout": g, "x_hat": x, "db": np.zeros(k), "dg": np.zeros(k)},
        {"m": m, "k": k},
        {},
    )
    back = {"dout": g, "x_hat": x, "scale": wide["b"], "db": wide["c"], "dg": wide["d"]}
    yield "bn_dx", {**back, "dx": np.zeros_like(g)}, {"m": m, "k": k}, {}
    yield "bn_dx", {**back, "dx": "dout"}, {"m": m, "k": k}, {}  # dx is dout
    # products with a short inner dimension: 300 columns, past one 256-column panel
    rows, cols = 7, 300
    for k in range(1, 5):
        for trans_a in (0, 1):
            for trans_b in (0, 1):
                a = _special_values(rows * k, dtype, 19 + k)
                b = _special_values(cols * k, dtype, 23 + k)
                dims = {"m": rows, "n": cols, "k": k, "ldc": cols}
                dims.update(lda=rows if trans_a else k, ldb=k if trans_b else cols)
                yield (
                    "gemm_small_k",
                    {"a": a, "b": b, "c": np.zeros(rows * cols, dtype)},
                    dims,
                    {"trans_a": trans_a, "trans_b": trans_b},
                )


@pytest.mark.parametrize("dtype", DTYPES)
def test_simd_versions_give_identical_bits(simd_versions, dtype):
    """Each instruction-set version of every fastnn_simd.h loop, on NaN, infinities,
    signed zeros, subnormals and ordinary values, with every flag combination: the same
    bits as the baseline version. (The equivalence suite checks the version this CPU
    runs against the reference, so each version equals the reference.)"""
    assert "default" in simd_versions and len(simd_versions) >= 2
    with np.errstate(all="ignore"):
        for case, (name, arrays, scalars, flags) in enumerate(_simd_cases(dtype)):
            results = {}
            for isa, lib in simd_versions.items():
                mine = {key: a.copy() for key, a in arrays.items() if not isinstance(a, str)}
                mine.update({key: mine[a] for key, a in arrays.items() if isinstance(a, str)})
                ret = _simd_call(lib, name, dtype, mine, scalars, flags)
                results[isa] = (ret, mine)
            ret0, base = results["default"]
            for isa, (ret, mine) in results.items():
                rets = [np.float64([r if r is not None else 0.0]) for r in (ret, ret0)]
                assert _same_bits(*rets), (name, case, isa)
                for key in base:
                    assert _same_bits(mine[key], base[key]), (name, case, flags, isa, key)


# --- the whole-epoch kernel --------------------------------------------------------------


def _epoch_args(dtype=np.float32, sparse=True, n=50, batch_size=16):
    """Valid train_epoch arguments for a 3-8-4 ReLU net with Adam, as _epoch builds them."""
    rng = np.random.default_rng(0)
    net = fastnn.MLP(
        [3, 8, 4],
        loss="cross_entropy",
        dtype=np.dtype(dtype).name,
        backend="cython",
        random_state=0,
    )
    X = rng.standard_normal((n, 3)).astype(dtype)
    labels = rng.integers(0, 4, n)
    y = np.eye(4, dtype=dtype)[labels]
    plan = _epoch.EpochPlan(net, batch_size)
    opt = Adam(lr=1e-2)
    opt._bind(net)
    n_batches = -(-n // batch_size)
    args = dict(
        X=X,
        y=np.zeros((0, 0), dtype) if sparse else y,
        labels=labels if sparse else np.zeros(0, np.int64),
        order=rng.permutation(n).astype(np.int64),
        batch_size=batch_size,
        dims=plan.dims,
        acts=plan.acts,
        alphas=plan.alphas,
        w_off=plan.w_off,
        b_off=plan.b_off,
        lowest=0,
        loss_code=codes.LOSS_SPARSE_CROSS_ENTROPY if sparse else codes.LOSS_CROSS_ENTROPY,
        params=net.params,
        grads=net.grads,
        ws=plan.ws,
        ws_off=plan.ws_off,
        lb=plan.lb,
        opt_code=codes.OPT_ADAM,
        state1=opt.state["m"],
        state2=opt.state["v"],
        hyper=_epoch._hyper(opt),
        lrs=np.full(n_batches, 1e-2),
        batch_start=0,
        batch_stop=n_batches,
        t0=0,
        segments=np.array(opt._update_runs(net), np.int64).reshape(-1, 3),
        stats=np.zeros(codes.N_STATS),
    )
    return net, args


def _corrupt(args, key, value):
    bad = dict(args)
    bad[key] = value(args[key]) if callable(value) else value
    return bad


BAD_CALLS = {
    "ws too small": ("ws", lambda ws: ws[:-1]),
    "region outside ws": ("ws_off", lambda off: off + np.int64(3)),
    "segment outside params": ("segments", lambda s: s + np.int64(1)),
    "segment reversed": ("segments", lambda s: s[:, [1, 0, 2]].copy()),
    "row index out of range": ("order", lambda o: np.where(o == 0, 50, o)),
    "negative row index": ("order", lambda o: np.where(o == 0, -1, o)),
    "order too short": ("order", lambda o: o[:-1]),
    "label out of range": ("labels", lambda lab: np.where(lab == 0, 4, lab)),
    "too many batches": ("batch_stop", lambda b: b + 1),
    "lrs too short": ("lrs", lambda lrs: lrs[:-1]),
    "dims do not match X": ("dims", lambda d: d + np.int64(1)),
    "layer outside params": ("w_off", lambda w: w + np.int64(10_000)),
    "lowest not a layer": ("lowest", 2),
    "unknown activation": ("acts", lambda a: a + np.int64(100)),
    "unknown loss": ("loss_code", 9),
    "unknown optimizer": ("opt_code", 9),
    "state too short": ("state2", lambda s: s[:-1]),
    "lb too short": ("lb", lambda lb: lb[:-1]),
    "batch_size 0": ("batch_size", 0),
    "hyper too short": ("hyper", lambda h: h[:5]),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_train_epoch_refuses_inconsistent_arguments_before_touching_memory(case):
    net, args = _epoch_args()
    key, value = BAD_CALLS[case]
    before = [args[k].copy() for k in ("params", "grads", "state1", "state2", "ws")]
    with pytest.raises(ValueError):
        fastnn.backend("cython")._train_epoch(**_corrupt(args, key, value))
    for arr, old in zip([args[k] for k in ("params", "grads", "state1", "state2", "ws")], before):
        np.testing.assert_array_equal(arr, old)


def test_train_epoch_refuses_wrong_targets():
    net, args = _epoch_args(sparse=False)
    with pytest.raises(ValueError):
        fastnn.backend("cython")._train_epoch(**_corrupt(args, "y", lambda y: y[:, :3].copy()))
    fastnn.backend("cython")._raw.train_epoch(**args)  # the valid call runs
    assert args["stats"][codes.STAT_STEPS] == 4


def _mistyped(a: np.ndarray, how: str):
    """``a`` made unacceptable to a kernel one way: another dtype, one dimension more,
    not C-contiguous, byte-swapped, read-only, or not an ndarray."""
    if how == "dtype":
        return np.zeros(a.shape, np.float64 if a.dtype == np.float32 else np.float32)
    if how == "ndim":
        return a[np.newaxis]
    if how == "strided":
        return np.repeat(a, 2, axis=-1)[..., ::2] if a.size else a.reshape(a.shape + (1,))
    if how == "swapped":
        return a.astype(a.dtype.newbyteorder())
    if how == "read-only":
        a = a.copy()
        a.flags.writeable = False
        return a
    return a.tolist()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("how", ["dtype", "ndim", "strided", "swapped", "read-only", "list"])
def test_raw_train_epoch_refuses_mistyped_arrays_by_name(dtype, how):
    """The raw kernel checks each array's type as ARGS states it (dtype, dimensions, C
    order, native byte order, writeable where it writes) and names the argument, before
    anything is touched."""
    raw = fastnn.backend("cython")._raw
    for name, kind in epoch_args.ARGS:
        if kind in ("n", "r"):
            continue
        net, args = _epoch_args(dtype, sparse=name != "y")
        if name not in args or (how == "read-only" and not kind.endswith("+")):
            continue
        before = {k: args[k].copy() for k in ("params", "grads", "state1", "state2", "stats")}
        bad = dict(args, **{name: _mistyped(args[name], how)})
        if how == "strided" and bad[name].flags.c_contiguous:
            continue  # an empty array is contiguous whatever its strides
        # a float64 params with float32 arrays (or the reverse) is refused at X
        who = "X" if (name, how) == ("params", "dtype") else name
        with pytest.raises(ValueError, match=rf"^train_epoch: {who} must be a "):
            raw.train_epoch(**bad)
        for k, old in before.items():
            np.testing.assert_array_equal(args[k], old, err_msg=f"{name} {how}: {k} changed")


@pytest.mark.parametrize("shuffled", [True, False])
def test_raw_train_epoch_accepts_unaligned_arrays(shuffled):
    """Arrays that start at an odd byte (unpickled from a buffer, as Dask's workers
    receive them) train as their aligned copies do, gathered (shuffled rows) or read
    in place (consecutive rows)."""
    raw = fastnn.backend("cython")._raw
    net, args = _epoch_args(np.float64)
    if not shuffled:
        args["order"] = np.arange(args["order"].size, dtype=np.int64)
    start = net.params.copy()
    raw.train_epoch(**args)
    want = net.params.copy()
    net.params[:] = start
    net2, args2 = _epoch_args(np.float64)
    X = args2["X"]
    raw_bytes = bytearray(X.nbytes + 1)
    unaligned = np.frombuffer(raw_bytes, np.float64, X.size, offset=1).reshape(X.shape)
    unaligned[...] = X
    assert not unaligned.flags.aligned
    raw.train_epoch(**dict(args2, X=unaligned, order=args["order"]))
    np.testing.assert_array_equal(net2.params, want)


def test_raw_train_epoch_refuses_incomplete_dropout_and_batch_norm_arguments():
    """dropout without its offsets or masks, bn without its offsets or buffers, and a
    mistyped one of them are refused by name, before anything is touched."""
    raw = fastnn.backend("cython")._raw
    net, args = _epoch_args()
    L = args["acts"].size
    dropout = {
        "dropout": np.zeros(L),
        "dropout_off": np.zeros((L, 2), np.int64),
        "masks": np.zeros(0, np.uint8),
    }
    bn = {
        "bn": np.zeros(L, np.int64),
        "bn_off": np.zeros((L, 4), np.int64),
        "buffers": np.zeros(0, np.float32),
    }
    params = net.params.copy()
    for group, leader in ((dropout, "dropout"), (bn, "bn")):
        for missing in group:
            if missing == leader:
                continue
            call = {**args, **group, missing: None}
            with pytest.raises(ValueError, match=rf"^train_epoch: {leader} needs "):
                raw.train_epoch(**call)
        for name in group:
            wrong = np.zeros(group[name].shape, np.int32)
            with pytest.raises(ValueError, match=rf"^train_epoch: {name} must be a "):
                raw.train_epoch(**{**args, **group, name: wrong})
        raw.train_epoch(**dict(args, **group, batch_stop=0))  # complete: accepted
    np.testing.assert_array_equal(net.params, params)


def test_train_epoch_counts_and_accumulates_stats_across_calls():
    """LOSS_SUM and CORRECT accumulate; STEPS, STATUS and GRAD_NORM belong to the call;
    an empty range of batches does nothing but reset STEPS and STATUS."""
    raw = fastnn.backend("cython")._raw
    net, args = _epoch_args()
    raw.train_epoch(**{**args, "batch_stop": 2})
    first = args["stats"].copy()
    assert first[codes.STAT_STEPS] == 2 and first[codes.STAT_STATUS] == codes.STATUS_OK
    assert 0 <= first[codes.STAT_CORRECT] <= 32 and first[codes.STAT_LOSS_SUM] > 0
    raw.train_epoch(**{**args, "batch_start": 2, "t0": 2})
    stats = args["stats"]
    assert stats[codes.STAT_STEPS] == 2 and stats[codes.STAT_LOSS_SUM] > first[0]
    assert stats[codes.STAT_CORRECT] >= first[codes.STAT_CORRECT]
    params = net.params.copy()
    raw.train_epoch(**{**args, "batch_start": 4, "batch_stop": 4})
    assert stats[codes.STAT_STEPS] == 0
    np.testing.assert_array_equal(net.params, params)


def _fit_both_paths(layers, acts, loss, output_activation, dtype, y, optimizer):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((45, layers[0]))
    kw = {} if output_activation is None else {"output_activation": output_activation}
    nets = []
    for epoch_kernel in (True, False):
        net = fastnn.MLP(
            layers, acts, loss=loss, dtype=dtype, backend="cython", random_state=5, **kw
        )
        opt = optimizer()
        assert _epoch.supports(net, opt)
        Xc, yc = net.check_data(X, y)
        logs = []
        for shuffle in (True, False):  # shuffled; then in order with a partial batch
            if epoch_kernel:
                logs.append(net.train_epoch(Xc, yc, opt, 16, shuffle=shuffle))
            else:  # on_step makes MLP.train_epoch take the step-by-step path
                logs.append(
                    net.train_epoch(Xc, yc, opt, 16, shuffle=shuffle, on_step=lambda j, loss: None)
                )
        nets.append((net.params.copy(), logs, opt.t, dict(opt.state)))
    return nets


FIT_CASES = [
    # hidden activations with and without fastnn_simd.h loops; the output layer's own
    ([4, 9, 6, 1], ["relu", "leaky_relu"], "mse", None, "mse1"),
    ([4, 9, 6, 3], ["sigmoid", "step"], "mse", "sigmoid", "mse3"),
    ([4, 9, 6, 3], ["identity", "elu"], "mse", "softmax", "mse3"),
    ([4, 9, 6, 1], ["tanh", "relu"], "binary_cross_entropy", None, "bce1"),
    ([4, 9, 6, 3], ["leaky_relu", "identity"], "binary_cross_entropy", None, "bce3"),
    ([4, 9, 6, 3], ["relu", "softmax"], "cross_entropy", None, "labels"),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", range(len(FIT_CASES)))
def test_epoch_kernel_equals_step_path_for_every_activation(case, dtype):
    layers, acts, loss, out_act, target = FIT_CASES[case]
    rng = np.random.default_rng(4)
    y = {
        "mse1": rng.standard_normal(45),
        "mse3": rng.standard_normal((45, 3)),
        "bce1": (rng.random(45) > 0.5).astype(float),
        "bce3": (rng.random((45, 3)) > 0.5).astype(float),
        "labels": rng.integers(0, 3, 45),
    }[target]
    for make_opt in (
        lambda: Adam(lr=0.02),
        lambda: AdamW(lr=0.02, weight_decay=0.1),
        lambda: Momentum(lr=0.05, clip_norm=0.1),
        lambda: RMSProp(lr=0.01, eps_inside_sqrt=True, weight_decay=1e-3),
    ):
        (pa, la, ta, sa), (pb, lb, tb, sb) = _fit_both_paths(
            layers, acts, loss, out_act, dtype, y, make_opt
        )
        np.testing.assert_array_equal(pa, pb)
        assert la == lb and ta == tb == 6
        for name in sa:
            np.testing.assert_array_equal(sa[name], sb[name], err_msg=name)
