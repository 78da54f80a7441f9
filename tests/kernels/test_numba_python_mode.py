"""The Numba kernels run once as plain Python (NUMBA_DISABLE_JIT=1).

Coverage tools only see Python lines, and a kernel that relies on something only the
compiler provides (an ``@overload`` helper, a typed constant) breaks in Python mode.
A child pytest runs a subset of the equivalence suite on the Numba backend with the
JIT disabled, a fresh Numba cache, small shapes (FASTNN_TEST_SMALL) and the "nojit"
hypothesis profile, and must pass.
"""

import os
import subprocess
import sys
from pathlib import Path

import fastnn

TESTS = Path(__file__).resolve().parents[1]
FILES = [
    "test_activations.py",
    "test_dense.py",
    "test_csr.py",
    "test_losses.py",
    "test_optimizers.py",
    "test_normalization.py",
]
# Contiguous inputs with fresh outputs, strided inputs written into strided outputs,
# the large-shape tests (small here) and the properties, numba only.
SELECT = "numba and (C-None or strided-strided or large or property or strided])"


def test_numba_kernels_as_python(tmp_path):
    env = dict(os.environ)
    env.update(
        NUMBA_DISABLE_JIT="1",
        NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"),
        FASTNN_TEST_SMALL="1",
        HYPOTHESIS_PROFILE="nojit",
    )
    src = str(Path(fastnn.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # In Python mode a kernel's scalar arithmetic is NumPy scalar arithmetic, which warns
    # on overflow (inf inputs are part of the properties); compiled with
    # error_model="numpy" the same kernel never warns. Those warnings are not failures.
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-n",  # in this process: the suite's run already has its workers
        "0",
        "-W",
        "ignore::RuntimeWarning",
        "--rootdir",
        str(TESTS.parent),
        "-c",
        str(TESTS.parent / "pyproject.toml"),
        "-k",
        SELECT,
        *[str(TESTS / "kernels" / f) for f in FILES],
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    tail = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, f"the Numba kernels fail in Python mode:\n{tail}"
    assert " passed" in proc.stdout and " deselected" in proc.stdout, tail
