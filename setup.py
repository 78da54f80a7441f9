"""Builds fastnn's Cython kernels; all other metadata lives in pyproject.toml.

Set FASTNN_CYTHON_DEBUG=1 to build with bounds and initialisation checks on
(slow, for debugging a kernel). Set FASTNN_SIMD_TARGETS to a comma-separated list of
GCC target_clones targets (e.g. "avx2,default") to build fastnn_simd.h's loops for
those instruction sets only, e.g. to test an AVX-512 host as an AVX2 one.
"""

import os
import runpy
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNEL_DIR = Path("src/fastnn/_kernels")


def write_codes():
    """codes.pxi and fastnn_codes.h from the tables of src/fastnn/registry.py (the one
    place codes are written), rewritten only when they change so that a rebuild of
    unchanged kernels stays a no-op."""
    registry = runpy.run_path(str(KERNEL_DIR.parent / "registry.py"))
    for name, text in (("codes.pxi", registry["cython_codes"]()),
                       ("fastnn_codes.h", registry["c_codes"]())):
        path = KERNEL_DIR / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


write_codes()

# One place for the compiler directives (scikit-learn's set). The debug switch turns
# the checks back on without touching the sources.
DEBUG = os.environ.get("FASTNN_CYTHON_DEBUG", "") not in ("", "0")
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "nonecheck": False,
    "embedsignature": True,
}

# -ffp-contract=off: no FMA contraction, so kernels that must equal the NumPy reference
# bit for bit round every product and sum as the reference does. Never -ffast-math.
# -fno-math-errno only lets sqrt compile to one instruction; it changes no value.
# -pthread: fastnn_pool.h's helper threads run the GEMM blocks of the epoch kernel.
COMPILE_ARGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-pthread"]
if DEBUG:
    COMPILE_ARGS = ["-O0", "-g", "-ffp-contract=off", "-pthread"]
LINK_ARGS = ["-pthread"]

MACROS = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
SIMD_TARGETS = os.environ.get("FASTNN_SIMD_TARGETS", "").strip()
if SIMD_TARGETS:
    targets = ",".join(f'"{t.strip()}"' for t in SIMD_TARGETS.split(","))
    MACROS.append(("FNN_CLONES", f"__attribute__((target_clones({targets})))"))

# C headers the kernels include (fastnn_simd.h: loops multiversioned for the CPU):
# found through include_dirs wherever the generated C lands, and a dependency of every
# module, so that editing one rebuilds them.
HEADERS = sorted(str(h) for h in [*KERNEL_DIR.glob("*.h"), *KERNEL_DIR.glob("*.pxi")])

extensions = [
    Extension(
        f"fastnn._kernels.{pyx.stem}",
        [str(pyx)],
        include_dirs=[str(KERNEL_DIR), numpy.get_include()],
        depends=HEADERS,
        extra_compile_args=COMPILE_ARGS,
        extra_link_args=LINK_ARGS,
        define_macros=MACROS,
    )
    for pyx in sorted(KERNEL_DIR.glob("*.pyx"))
]

# The six modules are independent C files: translate and compile them side by side on
# every CPU this build may use (pip passes no -j), which halves the build on 2 cores.
JOBS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class ParallelBuildExt(build_ext):
    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = JOBS or 1


# include_path: the kernels cimport each other as fastnn._kernels.<name> from src/.
# build_dir: the debug build writes its C files apart, so that a later normal build
# (which only compares timestamps) never compiles C generated with the checks on.
setup(ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES,
                            include_path=[str(KERNEL_DIR.parent.parent)],
                            build_dir="build/cython-debug" if DEBUG else None,
                            nthreads=JOBS or 0),
      cmdclass={"build_ext": ParallelBuildExt})
