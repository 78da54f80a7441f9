"""The asv suite in benchmarks/ loads and runs against this fastnn (no timings checked)."""

import os
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

import fastnn

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
BENCH = os.path.join(ROOT, "benchmarks")
# the fastnn this process imported (the source tree, or site-packages when installed)
SRC = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
ENV = dict(os.environ, PYTHONPATH=SRC, ASV_PYTHONPATH=SRC, FASTNN_BENCH_QUICK="1")


def test_every_benchmark_runs_once_at_its_smallest_size():
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, "smoke.py")],
        capture_output=True,
        text=True,
        timeout=900,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert " 0 failed" in proc.stdout


def test_asv_discovers_the_suite():
    pytest.importorskip("asv")
    asv = shutil.which("asv", path=os.path.dirname(sys.executable)) or shutil.which("asv")
    proc = subprocess.run(
        [asv, "check", "--python=same"],
        cwd=BENCH,
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "No problems found" in proc.stdout


def test_compare_measures_startup_and_fit_memory_in_new_processes(tmp_path):
    """compare.py's footprint sections run end to end and produce their tables; the
    memory figure is a count of bytes, so its BENCHMARKS.md bound is checked too."""
    out_json, out_md = tmp_path / "c.json", tmp_path / "c.md"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(BENCH, "compare.py"),
            "--quick",
            "--sections",
            "startup,memory",
            "--backends",
            "cython",
            "--dtypes",
            "float32",
            "--out-json",
            str(out_json),
            "--out-md",
            str(out_md),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import json

    rows = json.loads(out_json.read_text())["rows"]
    start = [r for r in rows if r["section"] == "startup"]
    mem = [r for r in rows if r["section"] == "memory"]
    assert {r["case"] for r in start} == {"default", "cython"}
    assert {r["case"] for r in mem} == {"fastnn.fit", "MLPClassifier"}
    assert all(r["status"] == "ok" for r in start + mem), start + mem
    for r in mem:  # data + params + Adam state + one batch, and nothing per sample more
        assert r["budget"] == r["data"] + r["params"] + 2 * r["params"] + r["activations"]
        assert r["ratio"] <= 1.3, r
    md = out_md.read_text()
    assert "## Start-up" in md and "## Peak memory of fit" in md


def _profile_step(*args):
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, "profile_step.py"), "--config", "A", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_profile_step_runs_a_config_in_steady_state():
    out = _profile_step("--steps", "16", "--threads", "2")
    assert "steady state after" in out
    assert "2 thread(s)" in out and "ms per step over 1024 steps" in out
    # compare.py's 8 batches a call: 16 steps are 2 calls
    assert "ms per step over 16 steps" in _profile_step("--steps", "16", "--batches", "8")
    # compare.py's digits network and batch
    out = _profile_step("--config", "digits", "--steps", "16", "--batches", "8")
    assert "config digits (64, 128, 128, 10) batch 64, float32" in out, out


_NRT_SCRIPT = """
import os, sys, tempfile
os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp()
import nrt_refs
counter = nrt_refs.RefCounter()
counter.install()
import numba
import numpy as np

@numba.njit
def row_dots(a, w, out):
    for i in range(a.shape[0]):
        # a row view held over a loop it may leave early: referenced once a row (LLVM's
        # reference pruning drops the pair around a straight loop, on some hosts'
        # targets even through inlined helpers)
        row = a[i]
        s = 0.0
        for j in range(row.shape[0]):
            if row[j] != row[j]:
                break
            s += row[j] * w[j]
        out[i] = s

for rows in (10, 30):
    a, w, out = np.ones((rows, 4)), np.ones(4), np.empty(rows)
    row_dots(a, w, out)  # compiles, uncounted
    counter.counts.clear()
    counter.active = True
    row_dots(a, w, out)
    counter.active = False
    table = nrt_refs.by_function(counter.counts)
    print(rows, sum(table.values()), *sorted(table))
"""


def test_nrt_refs_counts_references_and_names_the_function_that_takes_them():
    """The counter on a function with a known per-row reference (the epoch itself is
    left to the command: its fresh instrumented compile takes ~30 s)."""
    proc = subprocess.run(
        [sys.executable, "-c", _NRT_SCRIPT],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(ENV, PYTHONPATH=os.pathsep.join([BENCH, SRC])),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r10, n10, *names10), (r30, n30, *names30) = (
        line.split() for line in proc.stdout.strip().splitlines()
    )
    # counted while active only, and the per-row references grow with the rows
    assert int(n10) > 0 and (int(n30) - int(n10)) % 20 == 0 and int(n30) > int(n10), proc.stdout
    # every one mapped to the compiled function holding the call
    assert names10 == names30 == ["__main__.row_dots"], proc.stdout


_PERF_MAP_SCRIPT = """
import os, sys
import numba_perf_map
numba_perf_map.install()
import numba
import numpy as np

@numba.njit
def total(a):
    s = 0.0
    for v in a:
        s += v
    return s

@numba.njit(cache=True)
def twice(a):
    return 2.0 * total(a)

twice(np.ones(3))
path, count = numba_perf_map.write(os.path.join(sys.argv[1], "perf.map"))
cres = twice.overloads[twice.signatures[0]]
entry = cres.library.get_pointer_to_function(cres.fndesc.mangled_name)
print(path, count, entry)
"""


def test_numba_perf_map_names_the_compiled_functions(tmp_path):
    """The map perf reads: every function Numba compiled (a fresh compile and, in a
    second process, the same kernel loaded from the on-disk cache), with its size."""
    env = dict(ENV, PYTHONPATH=os.pathsep.join([BENCH, SRC]), NUMBA_CACHE_DIR=str(tmp_path))
    script = tmp_path / "probe.py"  # a file: Numba caches nothing compiled from -c
    script.write_text(_PERF_MAP_SCRIPT)
    for run in ("compiled", "loaded from the cache"):
        proc = subprocess.run(
            [sys.executable, str(script), str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
        assert proc.returncode == 0, (run, proc.stderr[-3000:])
        path, count, entry = proc.stdout.split()
        rows = [line.split(" ", 2) for line in Path(path).read_text().splitlines()]
        assert int(count) == len(rows) > 0, (run, rows)
        names = {name for _, _, name in rows}
        assert "__main__.twice" in names, (run, names)
        if run == "compiled":  # its own library then (loaded, twice's copy is inlined)
            assert "__main__.total" in names, names
        # the entry point lies in the range listed for it
        start, size = next(
            (int(a, 16), int(n, 16)) for a, n, name in rows if name == "__main__.twice"
        )
        assert size > 0 and start <= int(entry) < start + size, (run, start, size, entry)


def _run_script(script, *args):
    """A benchmark script's run, after checking that it succeeded."""
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _host_and_lines(script, *args):
    """The lines a benchmark script prints, after checking it ran and named the host
    and BLAS kernel first."""
    proc = _run_script(script, *args)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("CPU: ") and "kernel" in lines[0], lines[0]
    return proc, lines


def test_gemm_products_times_each_product_of_a_step():
    proc, lines = _host_and_lines(
        "gemm_products.py", "--configs", "A,B", "--repeats", "1", "--min-time", "0.001"
    )
    # fastnn's BLAS first, then SciPy's own (always installed) beside it
    heads = [line.split() for line in lines if line.startswith("product ")]
    assert len(heads) == 2 and all(h[1:3] == ["fastnn", "scipy"] for h in heads), heads
    # per config: the products in GemmOnly's order, then their sum
    for layers in (2, 3):
        names = [f"z{i} = x @ W{i}" for i in range(layers)]
        for i in reversed(range(layers)):
            names += [f"dW{i} = x^T @ dz{i}"] + ([f"dx{i} = dz{i} @ W{i}^T"] if i else [])
        rows = [line for line in lines if line.split("  ")[0] in names + ["sum"]][: len(names) + 1]
        lines = lines[lines.index(rows[-1]) + 1 :]
        assert [r.split("  ")[0] for r in rows] == names + ["sum"], proc.stdout
        assert all(float(r[24:].split()[0]) > 0 for r in rows), rows


def test_epoch_call_prints_a_calls_fixed_costs():
    proc, lines = _host_and_lines("epoch_call.py", "--backends", "cython")
    batches = [int(line.split(",")[1].split()[0]) for line in lines[1:5]]
    assert batches == [0, 1, 8, 128], proc.stdout
    assert all(float(line.split(":")[1].split()[0]) > 0 for line in lines[1:6]), proc.stdout
    assert "MLP.train_epoch's Python" in lines[5], proc.stdout


def test_scaling_simulates_the_tile_schedule_and_measures_the_step():
    sys.path.insert(0, BENCH)
    try:
        import scaling
    finally:
        sys.path.remove(BENCH)
    # list scheduling in claim order: each tile to the thread free first
    assert scaling.makespan([3.0, 1.0, 1.0, 1.0], 2) == 3.0
    assert scaling.makespan([1.0, 1.0, 1.0, 2.0], 2) == 3.0
    assert scaling.makespan([1.0] * 16, 16) == 1.0
    assert scaling.makespan([1.0] * 16, 64) == 1.0
    # a step's products: x @ W and dW per layer, dx above the first
    from benchmarks.common import CONFIGS

    assert [p[0] for p in scaling.step_products(CONFIGS["A"])] == [
        "x@W1",
        "dW1",
        "x@W2",
        "dW2",
        "dx2",
    ]
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(BENCH, "scaling.py"),
            "--configs",
            "A",
            "--repeats",
            "1",
            "--threads",
            "1,4",
            "--measure-up-to",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| A | float32 | 1.00x (1.00x) | 1.00x |" in proc.stdout


def test_others_load_leaves_out_this_process_and_its_reaped_children(monkeypatch):
    sys.path.insert(0, BENCH)
    try:
        from benchmarks import common
    finally:
        sys.path.remove(BENCH)
    # (busy seconds of the usable CPUs, seconds of this process and reaped children)
    readings = iter([(100.0, 5.0), (103.0, 6.5)])
    clock = iter([10.0, 12.0])
    monkeypatch.setattr(common, "_cpu_seconds", lambda: next(readings))
    monkeypatch.setattr(common, "_usable_cpus", lambda: {0, 1})
    monkeypatch.setattr(common, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    # 3 s busy in all, 1.5 s of them ours: 1.5 s of others over 2 s on 2 CPUs
    assert common.OthersLoad().share() == 1.5 / 4
    readings = iter([(100.0, 5.0), (101.0, 7.0)])  # ours exceed the total: clamped
    clock = iter([0.0, 1.0])
    assert common.OthersLoad().share() == 0.0


def test_others_load_sees_another_process_busy():
    sys.path.insert(0, BENCH)
    try:
        from benchmarks.common import OthersLoad
    finally:
        sys.path.remove(BENCH)
    if OthersLoad().share() is None:
        pytest.skip("no /proc/stat here: compare.py falls back to the load average")
    load = OthersLoad()
    burn = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 1.0: pass"
    child = subprocess.Popen([sys.executable, "-c", burn])
    try:
        # read before the child is reaped (no poll): until then its CPU time is not
        # this process's (os.times counts waited-for children only)
        time.sleep(1.3)
        share = load.share()
    finally:
        child.wait()
    # the child alone took about one CPU-second of these 1.3 s
    assert share is not None and share > 0.3 / (os.cpu_count() or 1)


def test_sparse_benchmark_runs_its_three_cases():
    """benchmarks/sparse.py end to end on few rows (figures printed, none checked)."""
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(BENCH, "sparse.py"),
            "--rows",
            "300",
            "--hidden",
            "8",
            "--epochs",
            "1",
            "--reps",
            "2",
            "--backend",
            "numba",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[1].startswith("columns | density | nnz/row | s/epoch")
    assert [line.split(" | ")[:3] for line in lines[2:5]] == [
        ["100000", "0.001", "100"],
        ["100000", "0.01", "1000"],
        ["10000", "0.01", "100"],
    ]
    assert "peak RSS" in lines[5]


def _step_row(case, impl, ms, dtype="float32", threads=1, section="step"):
    return {
        "section": section,
        "case": case,
        "dtype": dtype,
        "threads": threads,
        "impl": impl,
        "status": "ok",
        "median_ms": ms,
        "min_ms": ms,
        "max_ms": ms,
    }


def test_readme_section_is_rewritten_from_a_compare_run(tmp_path):
    """benchmarks/readme_section.py puts one run's figures between the README's markers
    and leaves the rest of the file as it was."""
    meta = {
        "date": "2026-12-02T15:00:00+00:00",
        "machine": {
            "cpu_model": "Test CPU",
            "cpus": 2,
            "avx2": True,
            "avx512f": False,
            "hypervisor": "KVM",
        },
        "versions": {"python": "3.11.7", "fastnn": "0.1.0 (/src/fastnn)"},
        "fastnn_blas": {"private": True, "source": "/x/libopenblas.so", "kernel": "Haswell"},
        "openblas_env_unset": {"OPENBLAS_CORETYPE": "Haswell"},
        "env": {},
        "git": {"commit": "abcdef0123", "dirty": False},
        "notes": [],
        "options": {
            "repeats": 7,
            "dtypes": ["float32"],
            "threads": [1],
            "configs": ["A", "B"],
            "digits_epochs": 50,
        },
    }
    rows = [
        _step_row("A", "torch", 0.4),
        _step_row("A", "jax", 0.07),
        _step_row("A", "fastnn_epoch:cython", 0.015),
        _step_row("A", "fastnn_epoch:numba", 0.02),
        _step_row("B", "torch", 3.0),
        _step_row("B", "fastnn_epoch:cython", 1.9),
        _step_row("B", "fastnn_epoch:numba", 1.8),
    ]
    targets = [
        {
            "target": "A step >= 40x torch eager",
            "dtype": "float32",
            "backend": "cython train_epoch",
            "value": 26.7,
            "met": False,
        },
        {
            "target": "A step >= 40x torch eager",
            "dtype": "float32",
            "backend": "cython",
            "value": 3.0,
            "met": False,
        },  # train_step: not the fit path
        {
            "target": "A step >= 20x torch eager",
            "dtype": "float32",
            "backend": "numba train_epoch",
            "value": 20.5,
            "met": True,
        },  # superseded
        {
            "target": "B step >= 1.2x JAX jit",
            "dtype": "float32",
            "backend": "numba train_epoch",
            "value": None,
            "met": None,
        },  # not measured
        {
            "target": "import fastnn < 0.5 s (median)",
            "dtype": "float32",
            "backend": "cython",
            "value": 0.2,
            "met": True,
        },
    ]
    src = tmp_path / "compare.json"
    src.write_text(__import__("json").dumps({"meta": meta, "rows": rows, "targets": targets}))
    readme = tmp_path / "README.md"
    readme.write_text(
        "# x\n\n## Performance\n\n<!-- performance:begin -->\nold figures\n"
        "<!-- performance:end -->\n\n## More\n\ntail\n"
    )

    # in a new process, as a user runs it (importing compare.py here would leave
    # benchmarks/ on sys.path, where its sparse.py shadows the sparse package)
    def run(path):
        return subprocess.run(
            [sys.executable, os.path.join(BENCH, "readme_section.py"), str(src), "--readme", path],
            capture_output=True,
            text=True,
            timeout=300,
            env=ENV,
        )

    proc = run(str(readme))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = readme.read_text()
    assert "old figures" not in text
    assert text.startswith("# x\n\n## Performance\n\n<!-- performance:begin -->\n")
    assert text.endswith("<!-- performance:end -->\n\n## More\n\ntail\n")
    assert "commit abcdef0 on Test CPU (2 CPUs, AVX2, KVM guest)" in text
    assert "kernel Haswell" in text and "OPENBLAS_CORETYPE=Haswell" in text
    # the fastest fastnn figure is bold only where it leads its row
    assert "| A | float32 | 1 | 0.400 | - | 0.0700 | - | - | - | **0.0150** | 0.0200 |" in text
    assert "| B | float32 | 1 | 3.00 | - | - | - | - | - | 1.90 | **1.80** |" in text
    assert "| A step >= 40x torch eager | float32 | 26.700 **missed** | - |" in text
    assert "| import fastnn < 0.5 s (median) | float32 | 0.200 met | - |" in text
    assert "A step >= 20x" not in text and "B step >= 1.2x JAX" not in text
    assert "1 of these 2 figures met" in text
    bare = tmp_path / "bare.md"
    bare.write_text("no markers here\n")
    proc = run(str(bare))
    assert proc.returncode != 0 and "performance:begin" in proc.stderr, proc.stderr[-3000:]
    assert bare.read_text() == "no markers here\n"


def test_the_readme_has_one_generated_performance_section():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    assert text.count("<!-- performance:begin -->") == 1
    assert text.count("<!-- performance:end -->") == 1


@pytest.mark.skipif(
    shutil.which("gcc") is None and shutil.which("cc") is None, reason="no C compiler"
)
def test_small_products_candidate_keeps_the_sequential_order():
    """benchmarks/small_products.py compiles and runs; every one of config A's ten
    products (five shapes, two dtypes) of the candidate kernel equals the sequential
    order along k bit for bit (the harness compares each element; figures not checked)."""
    proc = _run_script("small_products.py", "--repeats", "5", "--rounds", "1")
    rows = [line for line in proc.stdout.splitlines() if " blas/small " in line]
    assert len(rows) == 10, proc.stdout
    assert all("order ok" in line for line in rows), proc.stdout


def test_packed_gemm_times_each_product_on_both_gemms():
    """benchmarks/packed_gemm.py runs config B's eight products through OpenBLAS, through
    fastnn's own GEMM and as the kernels make them, float32 and float64: every product
    is there, with both errors against a wider product, of a BLAS's order, and the GEMM
    that took it by fastnn_gemm.h's rule (figures not checked). Where the own GEMM is not in use
    it says so and stops."""
    proc = _run_script("packed_gemm.py", "--configs", "B", "--repeats", "1", "--min-time", "0.001")
    lines = proc.stdout.splitlines()
    if len(lines) == 1:
        assert "own GEMM is not in use" in lines[0], lines
        pytest.skip("fastnn's own GEMM is not in use on this host")
    assert lines[0].startswith("CPU: ") and "own GEMM: fastnn" in lines[0], lines[0]
    names = ["z0", "z1", "z2", "dW2", "dx2", "dW1", "dx1", "dW0"]
    rows = [line for line in lines[1:] if line.split()[:1] and line.split()[0] in names]
    assert [r.split()[0] for r in rows] == names * 2, proc.stdout  # float32, float64
    assert [line for line in lines if line.startswith("config B")] == [
        f"config B (784, 256, 256, 10) batch 128, {d}, one thread" for d in ("float32", "float64")
    ]
    for dtype_rows, tol in ((rows[:8], 1e-5), (rows[8:], 1e-13)):
        taken = {r.split()[0]: r.split()[-4] for r in dtype_rows}
        # ten output columns (z2, dW2) stay on OpenBLAS; z0 (128 x 256, k 784) is packed
        assert taken["z2"] == taken["dW2"] == "BLAS" and taken["z0"] == "own", proc.stdout
        for row in dtype_rows:
            blas_error, own_error = (float(v) for v in row.split()[-2:])
            # each output is a sum of k <= 784 terms: both well within k u
            assert 0 <= blas_error < tol and 0 <= own_error < tol, row
    assert lines[-1].startswith("sum (ms)"), lines[-1]
