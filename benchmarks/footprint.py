"""Start-up time and peak memory of fastnn, each measured in a new process.

compare.py's ``startup`` and ``memory`` sections (BENCHMARKS.md: ``import fastnn``
under 0.5 s, the first training step of a new process under 1 s with the default
backend, ``fit``'s peak memory within 1.3x of data + parameters + optimizer state +
one batch of activations). Every figure comes from a child Python process, so nothing
the parent imported or compiled helps it.

- Start-up: the child times ``import fastnn`` itself; the first step is the child's
  whole wall time as the parent sees it (interpreter start, imports, building the
  784-256-256-10 network, one ``fit`` step of batch 128, exit). Numba is measured with
  its on-disk cache filled by an earlier process (a user's second run) and once with
  an empty cache (the very first run, compilation included).
- Memory: after a warm-up fit on 256 rows (imports, Numba's compilation and the BLAS
  library's buffers are costs of the process, not of ``fit``), tracemalloc is started,
  the data is created in its final dtype, and the model is built and trained. The peak
  is compared with the budget: X and y as passed, the parameters, the optimizer's state
  (Adam: two buffers the size of the parameters) and one batch of every layer's output.
  tracemalloc sees NumPy's buffers and Python's objects; fastnn's workspaces are NumPy
  arrays, so they count.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_STARTUP_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import fastnn
t1 = time.perf_counter()
import numpy as np
backend = sys.argv[1] if sys.argv[1] != "default" else None
rng = np.random.default_rng(0)
X = rng.standard_normal((128, 784), dtype=np.float32)
y = rng.integers(0, 10, 128)
net = fastnn.MLP([784, 256, 256, 10], loss="cross_entropy", backend=backend,
                 random_state=0)
net.fit(X, y, epochs=1, batch_size=128)
print(json.dumps({"import_s": t1 - t0, "in_process_s": time.perf_counter() - t0,
                  "backend": net.backend_name}))
"""

_MEMORY_CHILD = r"""
import json, sys, tracemalloc, warnings
import numpy as np
import fastnn
api, backend, dtype = sys.argv[1], sys.argv[2], np.dtype(sys.argv[3])
n, d, hidden, k, batch, epochs = (int(a) for a in sys.argv[4:10])
hidden = [hidden, hidden]
warnings.simplefilter("ignore")

def train(X, y, n_epochs):
    if api == "MLPClassifier":
        clf = fastnn.MLPClassifier(hidden_layer_sizes=hidden, batch_size=batch,
                                   max_iter=n_epochs, tol=0.0, n_iter_no_change=10**6,
                                   random_state=0, dtype=dtype.name, backend=backend)
        clf.fit(X, y)
        return clf._model
    net = fastnn.MLP([d, *hidden, k], loss="cross_entropy", dtype=dtype, backend=backend,
                     random_state=0)
    fastnn.fit(net, X, y, epochs=n_epochs, batch_size=batch)
    return net

rng = np.random.default_rng(0)
train(rng.standard_normal((256, d)).astype(dtype), rng.integers(0, k, 256), 1)
tracemalloc.start()
X = rng.standard_normal((n, d), dtype=dtype)
y = rng.integers(0, k, n)
net = train(X, y, epochs)
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
params = net.params.nbytes
state = sum(a.nbytes for a in net.optimizer.state.values())
activations = batch * (2 * hidden[0] + k) * dtype.itemsize
print(json.dumps({"peak": peak, "data": X.nbytes + y.nbytes, "params": params,
                  "state": state, "activations": activations,
                  "budget": X.nbytes + y.nbytes + params + state + activations,
                  "backend": net.backend_name}))
"""

# The data of the memory section: n rows of d features, two hidden layers, k classes.
MEMORY_SHAPE = {"n": 200_000, "d": 100, "hidden": 256, "k": 10, "batch": 128, "epochs": 2}


def _env(extra: dict | None = None) -> dict:
    """The parent's environment, with this fastnn importable in the child."""
    import fastnn
    env = dict(os.environ, **(extra or {}))
    src = str(Path(fastnn.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def _child(script: str, args: list[str], env: dict, timeout: float = 900) -> tuple[dict, float]:
    """Run ``script`` in a new interpreter; (its last JSON line, its wall time in s)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, env=env, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip()
                           else f"exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def _startup_row(case: str, impl: str, runs: list[tuple[dict, float]]) -> dict:
    imports = [r["import_s"] for r, _ in runs]
    walls = [w for _, w in runs]
    return {"section": "startup", "case": case, "impl": impl, "label": f"fastnn {case}",
            "dtype": "float32",
            "threads": None, "status": "ok", "backend": runs[0][0]["backend"],
            "import_median_s": statistics.median(imports), "import_max_s": max(imports),
            "in_process_median_s": statistics.median(r["in_process_s"] for r, _ in runs),
            "first_step_median_s": statistics.median(walls),
            "first_step_max_s": max(walls), "runs": len(runs)}


def startup_rows(backends: list[str], repeats: int) -> list[dict]:
    """``import fastnn`` and a new process's first training step, per backend."""
    env = _env()
    rows = []
    for name in ["default"] + [b for b in backends if b != "default"]:
        try:
            _child(_STARTUP_CHILD, [name], env)  # fills Numba's cache, warms the disk
            runs = [_child(_STARTUP_CHILD, [name], env) for _ in range(repeats)]
        except (RuntimeError, subprocess.SubprocessError) as exc:
            rows.append({"section": "startup", "case": name, "impl": f"fastnn:{name}",
                         "label": f"fastnn {name}", "dtype": "float32", "threads": None,
                         "status": "error", "note": str(exc)})
            continue
        rows.append(_startup_row(name, f"fastnn:{name}", runs))
        if name == "numba":
            with tempfile.TemporaryDirectory() as cache:
                cold = _child(_STARTUP_CHILD, [name],
                              _env({"NUMBA_CACHE_DIR": cache}))
            rows.append(_startup_row("numba, empty cache", "fastnn:numba", [cold]))
    return rows


def memory_rows(backends: list[str], dtypes: list[str]) -> list[dict]:
    """Peak traced memory of fit (fastnn.fit and MLPClassifier.fit) against its budget."""
    env = _env()
    shape = [str(MEMORY_SHAPE[k]) for k in ("n", "d", "hidden", "k", "batch", "epochs")]
    rows = []
    for dtype in dtypes:
        for api in ("fastnn.fit", "MLPClassifier"):
            for bk in backends:
                row = {"section": "memory", "case": api, "impl": f"fastnn:{bk}",
                       "label": f"fastnn {bk}, {api}", "dtype": dtype, "threads": None,
                       "status": "ok"}
                try:
                    got, _ = _child(_MEMORY_CHILD, [api, bk, dtype, *shape], env)
                except (RuntimeError, subprocess.SubprocessError) as exc:
                    row.update(status="error", note=str(exc))
                else:
                    row.update(got, ratio=got["peak"] / got["budget"])
                rows.append(row)
    return rows
