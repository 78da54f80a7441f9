"""Regenerate docs/reliability.md from what the reliability tests do.

    python tools/reliability_report.py            # run the tests, measure, write the doc
    python tools/reliability_report.py --no-run   # re-render from the last records

The fuzz and fault tests (tests/test_fuzz_files.py, tests/test_fuzz_api.py,
tests/test_reliability.py) each call ``record()`` (tests/_reliability_record.py) with
what they tried, how many cases and the outcome they asserted. This script runs them
with ``FASTNN_RELIABILITY_JSON`` set, so the records are collected into
docs/reliability.json, and renders the table. In ordinary test runs every record is
compared with its row of the table, so a test that changes without the table being
regenerated fails.

It also measures what the tests deliberately do not assert (timings vary with the
machine's load): how long two models take in two threads against one after the other.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
RECORDS = ROOT / "docs" / "reliability.json"
TESTS = [
    "tests/test_fuzz_files.py",
    "tests/test_fuzz_api.py",
    "tests/test_reliability.py",
    "tests/test_bad_numbers.py",
    "tests/test_kernel_api_safety.py",
    "tests/test_cli_files.py",
    "tests/test_special_files.py",
    "tests/test_thread_safety.py",
    "tests/test_blas_isolation.py",
    "tests/test_fork_safety.py",
]
AREAS = [
    "public API",
    "model files",
    "special files",
    "concurrent save/load",
    "training faults",
    "concurrency",
    "threads",
    "forks",
    "determinism",
    "resources",
]

LONGER = """\
CI runs bounded numbers of cases. Run by hand for longer while they were written, with
no finding left open:

- the atheris harness: `python tests/fuzz/fuzz_load.py CORPUS -max_total_time=600`,
  124,000 inputs in 10 minutes (381 coverage edges);
- the input fuzzers: `python tests/fuzz/api_fuzz.py model 2000` (and `estimators
  1500`, `cli 2000`), ten times their CI examples.
"""

FIXED = """\
What these tests found, each fixed in its own commit (see `git log`):

- **Wrong answers from threads.** Models cached one inference workspace per batch
  size, shared by every thread: two threads predicting with one model got 1-2% wrong
  labels, an `MLPClassifier` behind 8 threads 10-15%. Workspaces are now lent per call
  from a bounded pool, and a per-model (and per-estimator) guard refuses inference and
  training from other threads while a model trains (the training thread's callbacks
  still predict).
- **Results that depended on the calling thread, and forks that hung.** fastnn held
  OpenBLAS at one thread by saving and restoring its process-wide thread count around
  the epoch kernel; two threads raced on it, so a worker thread trained other bits than
  the main thread (1.8e-05 after one epoch) and a fork taken while another thread
  trained hung (OpenBLAS's level-3 lock and thread pool copied mid-product). Every
  product now runs on a private, single-threaded OpenBLAS instance
  (`fastnn._blas`) that no thread or library can reconfigure; the estimators no longer
  change the process's BLAS pools, and their L2 sum is a single-threaded BLAS dot
  (NumPy's is threaded above 10,000 values). A Numba epoch in a child forked after
  threaded epochs runs on one thread (GNU OpenMP terminates such a child).
- **Memory corruption through the checked kernel API.** `np.matrix` outputs kept two
  dimensions through flattening and the Numba kernels wrote past their end (SIGSEGV);
  subclasses are now viewed as plain arrays, masked arrays refused, 0-d stays 0-d, and
  the unchecked kernels are private (`_raw`).
- **Gradient ascent without a word.** A schedule yielding a negative (or string)
  learning rate trained on the compiled path; every rate a schedule yields is now
  checked on every path.
- **Files destroyed or hung on.** `fastnn.save` replaced `/dev/null` (as root), FIFOs
  and symlinks by regular files and overwrote read-only files; `fastnn.load` of a FIFO
  hung, and a load racing a save could read a short size ("truncated"). Save now
  writes through symlinks atomically and refuses special and read-only files; load
  refuses non-regular files before reading and sizes the file from its descriptor.
- **Exceptions other than ValueError / ModelFileError**: 401-digit integers
  (OverflowError) in any numeric field or constructor argument, impossible empty
  shapes, schedules nested 500 deep (RecursionError in fit), absurd counters loaded
  silently, duplicate keys in nested metadata, `train_epoch` on unprepared data
  (Cython/Numba internals, ZeroDivisionError).
- **The command line lost work.** `fastnn train -o missing/dir/m.fnn` failed after
  training (outputs are now checked first); `predict -o` wrote in place (a partial CSV
  after Ctrl-C; now a temporary file renamed at the end); `--hidden 100000,100000`
  tried a 37 GiB allocation (layer sizes are checked against memory); special or
  UTF-16 files gave tracebacks or misleading messages.

- **Wrong answers presented as right.** Finite inputs that overflow the network
  (3e38 in float32) gave NaN logits, and `predict` answered class 0 for those rows
  (the estimators and `fastnn predict` passed it on). `decision_function`, `predict`,
  `predict_proba` and `evaluate` now raise a ValueError that counts the rows and gives
  the largest |X|, or says that the weights themselves are not finite.
- **Silently ignored data in the command line.** A column holding 1e300 had an
  infinite standard deviation, was standardised to zeros and ignored; a regression
  target near 1e300 was trained as zeros. Such columns are now measured in units of
  their largest value; a value that still overflows at predict time is reported with
  its file, line and column.
- **Loader exceptions other than ModelFileError**: JSON nested 10^5 deep
  (RecursionError), a list as the model dtype (TypeError), estimator metadata of the
  wrong JSON type (AttributeError), estimator files whose class labels disagree with
  the network (loaded, then IndexError in predict), `n_threads` of 2^70 (a ctypes
  error in predict).
- **Memory amplification**: a 16 MiB header of `[],[],...` took ~380 MB and ~10 s to
  parse; headers are now refused above a million JSON values (~60 MB at most).
- **Saves**: files were created 0600 (mkstemp) whatever the umask; the directory was
  not fsynced after the rename. A rollback snapshot of a new optimizer held two
  copies at once (6 x params at the peak for Adam, now 5 x) and left the diverged
  epoch's optimizer state in place while resetting its step count.
- **Misleading messages and numbers**: targets that overflow float32 (y = 1e300)
  were reported as a divergence ("try a lower learning rate") instead of as the
  data, and so was a first loss that is not finite before any update (y = 1e300 in
  float64); R^2 of targets near 1e300 came out NaN (`evaluate`) or overflowed
  (`fastnn train` / `predict` reports); scikit-learn's
  "could not convert string to float" named neither X nor y; a DataFrame mixing bool
  and numeric columns was refused by the model API (now converted as scikit-learn
  does; other columns are named in the error); `format_version` took " 1", "1_0" and
  non-ASCII digits.
"""

LEFT = """\
Found and left as they are (decisions for the maintainers):

- The unchecked kernels (`fastnn.backend(...)._raw`) still have no length checks: they
  are private, for fastnn's own hot paths, which check their arguments first.
- Writing into a model's parameter views (`net.params[...] = ...`, `layer.W`) from
  another thread while it predicts cannot be guarded; `fastnn.save` of a model that
  another thread is training is not refused.
- Where SciPy's BLAS is not OpenBLAS (or with `FASTNN_SHARED_BLAS=1`), fastnn falls
  back to SciPy's shared BLAS and holds it at one thread during the compiled epochs
  only: the step path and inference then run on whatever the process set.
- Saving replaces the file by a rename, so it breaks hard links to it.

- **Building** a model draws its initial weights in float64 (`initializers.py`:
  `rng.standard_normal(shape) * scale`): a float32 model of 1e8 parameters peaks at
  about 4 x its parameters while being built (see the 1e8 row). Drawing row blocks
  would bound it by the block and give the same numbers (a Generator's
  `standard_normal` and `uniform` drawn in blocks equal one draw of the whole).
- **`rollback=True` (the default) costs one copy of parameters and optimizer state**
  (3 x params for Adam) on top of the 2 x params of the state, for a case the
  compiled path already narrows to one: it checks the loss and the gradient before
  every update, so only the update itself can make the weights non-finite. An update
  kernel that computed the new values, checked them and only then wrote them (or
  that returned a status "update overflowed" with the parameters untouched) would
  make the copy unnecessary; that is a change to the kernels and the epoch bridge,
  not made here. Until then `rollback=False` is the way to train models near the
  memory limit (the error then says to reload the model).
- A process killed during a save leaves its temporary file (`.fastnn-XXXXXXXX.tmp`) next to
  the target; the previous file is intact, the temporary one can be deleted.
- The command line parses numbers with Python's `float`, which also accepts "1_000"
  and non-ASCII digits; nothing wrong comes of it, but it is laxer than other CSV
  readers.
- Parsing a header is bounded but not free: a 16 MiB header of a million small values
  costs ~60 MB while it is parsed.
"""


def run_tests(out: pathlib.Path) -> int:
    env = dict(
        os.environ,
        FASTNN_RELIABILITY_JSON=str(out),
        PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    )
    out.write_text("")
    # -n 0, one process: the tests append their records to one file
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", *TESTS],
        cwd=ROOT,
        env=env,
    ).returncode


def measure_threads(repeats: int = 3) -> list[dict]:
    """Wall time of two models trained one after the other and in two threads."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    import fastnn

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60000, 32)).astype(np.float32)
    y = rng.integers(0, 4, 60000)
    rows = []
    # the machine's own answer: large GEMMs (GIL released, no fastnn) in two threads
    A = rng.standard_normal((1200, 1200)).astype(np.float32)

    def gemms(_=None):
        for _ in range(12):
            A @ A

    with threadpool_limits(1, user_api="blas"):
        seq, par = _sequential_and_threaded(gemms, [None, None], repeats)
    rows.append({"backend": "baseline: NumPy 1200 x 1200 GEMMs", "sequential": seq, "threads": par})
    for backend in fastnn.available_backends():
        if backend == "numpy":
            continue
        nets = [
            fastnn.MLP([32, 128, 128, 4], loss="cross_entropy", backend=backend, random_state=s)
            for s in (1, 2)
        ]
        with threadpool_limits(1, user_api="blas"):
            for net in nets:  # compile, plans
                net.fit(X[:256], y[:256], epochs=1, batch_size=32)

            def train(net):
                net.fit(X, y, epochs=1, batch_size=32)

            seq, par = _sequential_and_threaded(train, nets, repeats)
        rows.append({"backend": f"fastnn {backend}", "sequential": seq, "threads": par})
    return rows


def _sequential_and_threaded(work, args: list, repeats: int) -> tuple[float, float]:
    """Best wall times of work(a) for every a in args, one after the other and each in
    its own thread."""
    seq, par = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for a in args:
            work(a)
        seq.append(time.perf_counter() - t0)
        threads = [threading.Thread(target=work, args=(a,)) for a in args]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        par.append(time.perf_counter() - t0)
    return min(seq), min(par)


def _load_average():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def render(records: list[dict], threads: list[dict] | None, meta: dict) -> str:
    rows = {r["key"]: r for r in records}
    ordered = sorted(
        rows.values(),
        key=lambda r: (AREAS.index(r["area"]) if r["area"] in AREAS else 99, r["key"]),
    )
    lines = [
        "# Reliability: what was tried, how often, and what came out",
        "",
        "<!-- Generated by tools/reliability_report.py from the records of the tests; "
        "do not edit by hand. -->",
        "",
        "fastnn is fed hostile inputs, damaged and malicious model files, runs that "
        "blow up, interruptions, killed processes and threads. Each row below is one "
        "test (the first column names the `record()` call in one of the test files "
        "listed at the end of this page); *Cases* is how many "
        "inputs, files or faults it tries, *Outcome* what it asserts for every one of "
        "them. Every CI run checks that each test still tries what its row says and "
        "asserts that outcome; *Breakdown* is informational, from the run that "
        "generated this page.",
        "",
        f"Generated {meta['date']} on {meta['machine']} (Python {meta['python']}, "
        f"backends: {meta['backends']}); the tests "
        f"{'passed' if meta['status'] == 0 else 'FAILED (status {})'.format(meta['status'])}.",
        "",
        "| Test | Area | What was tried | Cases | Outcome | Breakdown (last run) |",
        "|---|---|---|---|---|---|",
    ]
    for r in ordered:
        lines.append(
            f"| `{r['key']}` | {r['area']} | {r['what']} | {r['cases']} | "
            f"{r['outcome']} | {r['breakdown']} |"
        )
    total = sum(r["cases"] for r in ordered)
    lines += [
        "",
        f"{len(ordered)} tests, {total:,} cases in all. None crashed, hung, "
        f"executed or imported anything from a file, or gave a wrong answer "
        f"presented as right.",
        "",
    ]
    if threads:
        lines += [
            "## Two models in two threads",
            "",
            "The concurrency tests assert that the compiled epochs release the GIL "
            "and that two threads give the sequential results bit for bit; how much "
            "faster they are depends on the machine and its load, so it is "
            "measured here instead: two models ([32, 128, 128, 4], one epoch of "
            "60000 rows, batch 32, one BLAS thread each), best of 3, on "
            f"{os.cpu_count()} cores (load average {meta['load']:.1f} at the start).",
            "",
            "| what | one after the other | two threads | ratio |",
            "|---|---|---|---|",
        ]
        for t in threads:
            lines.append(
                f"| {t['backend']} | {t['sequential']:.2f} s | {t['threads']:.2f} s"
                f" | {t['threads'] / t['sequential']:.2f} |"
            )
        lines += [
            "",
            "A ratio of 0.5 is perfect parallelism on two free cores; 1.0 would "
            "mean the threads take turns. The baseline row (NumPy's own large "
            "GEMMs, which release the GIL, in the same two threads) says what this "
            "machine allowed at the time: on a machine shared with other jobs it "
            "is well above 0.5, and fastnn's rows should be read against it, not "
            "against 0.5.",
            "",
        ]
    lines += [
        "## Longer runs",
        "",
        LONGER,
        "## Found and fixed",
        "",
        FIXED,
        "## Found and left",
        "",
        LEFT,
        "## The tests",
        "",
        "The rows come from these files: " + ", ".join(f"`{t}`" for t in TESTS) + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--no-run",
        action="store_true",
        help="render from docs/reliability.json without running the tests",
    )
    parser.add_argument("--no-timing", action="store_true", help="skip the two-thread timing")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    load = _load_average()
    status = 0
    if not args.no_run:
        with tempfile.TemporaryDirectory() as d:
            out = pathlib.Path(d) / "records.jsonl"
            status = run_tests(out)
            records = [json.loads(line) for line in out.read_text().splitlines() if line]
        previous = json.loads(RECORDS.read_text()) if RECORDS.exists() else {}
        threads = None if args.no_timing else measure_threads()
        if threads is None:
            threads = previous.get("threads")
        import fastnn

        meta = {
            "date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()} {platform.system()}",
            "python": platform.python_version(),
            "backends": ", ".join(fastnn.available_backends()),
            "status": status,
            "load": load,
        }
        RECORDS.write_text(
            json.dumps({"meta": meta, "records": records, "threads": threads}, indent=1) + "\n"
        )
    data = json.loads(RECORDS.read_text())
    DOC.write_text(render(data["records"], data["threads"], data["meta"]))
    print(
        f"wrote {DOC.relative_to(ROOT)} ({len(data['records'])} rows)"
        + ("" if status == 0 else f"; the tests FAILED (status {status})")
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
