"""Scaling model of fastnn's tiled matrix products, for machines with more cores than this.

Every product of a training step is cut into the output tiles of
``fastnn.reference.blas.gemm_blocks`` (docs/spec.md §10); the whole-epoch kernels run a
product's tiles on ``n_threads`` threads, each thread claiming the next tile (in
``gemm_claim``'s order) when it is free, and start the next product when all are done.
So, given each tile's cost on one thread, the time of a step on ``p`` threads follows
from list scheduling. This script:

1. measures, for each product of a step of each config (benchmarks/common.py's
   CONFIGS), every tile's time on one thread (the very call the Numba kernels make for
   it, in a compiled loop, best of ``--repeats``), and the product as one unsplit call;
2. simulates the schedule of each product's tiles on 1, 2, 4, ... 64 threads (a tile
   goes to the thread that is free first, in claim order; where the kernels pack op(a)
   once for a product's column tiles, the chunks of that packing are scheduled
   the same way before the tiles) and prints the predicted speed-up of the products,
   and of the step with everything else taken as serial;
3. measures the step itself (``MLP.train_epoch`` per step, the ``--backend`` kernel) on
   every thread count this process may use: 1 and 2 threads on a 2-core machine, and
   all of them on a larger one, where the script measures instead of simulating.

The model's limits (docs/benchmarks/2026-12-02-tiles-scaling.md): threads are assumed
independent (no shared memory bandwidth or cache, no turbo changes), claiming a tile
and waking a helper cost nothing, and the step's non-product work (elementwise passes,
loss, optimizer update) is serial. Run it with the BLAS pinned as compare.py explains::

    OPENBLAS_CORETYPE= OPENBLAS_L2_SIZE= python benchmarks/scaling.py
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
from benchmarks.common import CONFIGS, make_batches  # noqa: E402

THREADS = (1, 2, 4, 8, 16, 32, 64)


def step_products(cfg):
    """The products of one training step: (what, m, n, k, trans_a, trans_b) with the
    output (m, n): x @ W per layer, dW = x.T @ dz per layer, dx = dz @ W.T for every
    layer above the first (the kernels' own transposes)."""
    b = cfg.batch
    out = []
    for i, (n_in, n_out) in enumerate(zip(cfg.sizes[:-1], cfg.sizes[1:])):
        out.append((f"x@W{i + 1}", b, n_out, n_in, False, False))
        out.append((f"dW{i + 1}", n_in, n_out, b, True, False))
        if i > 0:
            out.append((f"dx{i + 1}", b, n_in, n_out, False, True))
    return out


@functools.cache
def _tile_runner():
    """A jitted loop: ``reps`` passes over ``tiles`` ((T, 4) int64 rows r0, r1, c0, c1),
    each tile through the Numba kernels' one-tile call (``_gemm_tile``: the BLAS call, or
    the short-inner-dimension loop, that the kernels make for it), so that no Python or
    ctypes call (a few microseconds each) is timed with a tile of a few microseconds."""
    import numba

    from fastnn._kernels._numba_common import _gemm_tile, _share, _share_pack, _unshare

    @numba.njit
    def share(a, out, trans_a, narrowest):
        m, n, k = out.shape[0], out.shape[1], a.shape[0] if trans_a else a.shape[1]
        chunks = _share(trans_a, m, n, k, a, a.shape[1], out, n, narrowest)
        for t in range(chunks):
            _share_pack(out, t)
        return chunks

    @numba.njit
    def run(a, b, out, trans_a, trans_b, tiles, reps, narrowest=0, share_each=True):
        # narrowest > 0: op(a) packed once for the tiles first, as the kernels do for a
        # product cut in one row of tiles (fastnn_gemm.h's shared packing):
        # before each pass (share_each), or once around all of them; the number of
        # packing chunks is returned (0: no pack)
        held = chunks = 0
        if narrowest > 0 and not share_each:
            held = chunks = share(a, out, trans_a, narrowest)
        for _ in range(reps):
            shared = 0
            if narrowest > 0 and share_each:
                shared = chunks = share(a, out, trans_a, narrowest)
            for t in range(tiles.shape[0]):
                r0, r1, c0, c1 = tiles[t, 0], tiles[t, 1], tiles[t, 2], tiles[t, 3]
                _gemm_tile(a, b, out, trans_a, trans_b, r0, r1, c0, c1)
            if shared:
                _unshare(out)
        if held:
            _unshare(out)
        return chunks

    return run


def _shares(m, n, k, tiles) -> int:
    """The narrowest tile's width when the kernels pack op(a) once for this product's
    tiles (the own GEMM runs, one row of several tiles, k past the short sums), else 0."""
    from fastnn.reference.blas import GEMM_OWN, GEMM_SMALL_K

    one_row = len(tiles) > 1 and all(r0 == 0 and r1 == m for r0, r1, _, _ in tiles)
    if not GEMM_OWN or not one_row or k <= GEMM_SMALL_K:
        return 0
    return min(c1 - c0 for _, _, c0, c1 in tiles)


def tile_costs(m, n, k, trans_a, trans_b, dtype, repeats, min_time=2e-3):
    """(tiles, seconds of each tile's call on one thread, seconds of the unsplit call,
    seconds of each chunk of the packing before the tiles), from ``repeats`` rounds, each
    timing a pass over all the tiles, every tile alone and the unsplit call, after one
    call of each to size them. Each timing runs its calls back to back in compiled code
    (:func:`_tile_runner`) for at least ``min_time`` seconds. The unsplit call and the
    pass over all tiles count their best time; each tile's best time is scaled so that
    the tiles (and the packing) add up to the best pass (a tile repeated alone keeps its
    operands in cache, which the pass, as the kernels, does not). A product the kernels
    make on a transposed copy of b (``gemm_copies_b``) is timed so, the copy (once per
    product, by the calling thread) not counted. Where the kernels pack op(a) once for
    the tiles (:func:`_shares`), the pass does too, each tile alone reads that pack, and
    the packing, whose chunks the threads share out before the tiles, is timed alone
    and returned as its chunks' (equal) costs."""
    from fastnn.reference.blas import gemm_blocks, gemm_copies_b

    rng = np.random.default_rng(m + 7 * n + 13 * k)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c = np.empty((m, n), dtype)
    if gemm_copies_b(m, n, k, trans_a, trans_b, single=np.dtype(dtype) == np.float32):
        b, trans_b = np.ascontiguousarray(b.T), False  # then a @ bt's tiles
    tiles = gemm_blocks(m, n, k, trans_a, trans_b, dtype)
    narrowest = _shares(m, n, k, tiles)
    run = _tile_runner()
    # (tiles, op(a) packed before each pass, or once around them all)
    groups = [(np.array(tiles, np.int64), True)]
    groups += [(np.array([t], np.int64), False) for t in tiles]
    groups.append((np.zeros((0, 4), np.int64), True))  # the packing alone
    groups.append((np.array([(0, m, 0, n)], np.int64), True))  # the unsplit call
    narrow = [narrowest] * (len(groups) - 1) + [0]
    run(a, b, c, trans_a, trans_b, groups[-1][0], 1, 0, True)  # compiled, warm
    reps = []
    for (tiles_g, each), nw in zip(groups, narrow):  # sized by one call each
        t0 = time.perf_counter()
        run(a, b, c, trans_a, trans_b, tiles_g, 1, nw, each)
        reps.append(max(1, int(min_time / max(time.perf_counter() - t0, 1e-7))))
    best = [float("inf")] * len(groups)
    chunks = 0
    for _ in range(repeats):
        for g, ((tiles_g, each), nw) in enumerate(zip(groups, narrow)):
            t0 = time.perf_counter()
            chunks = max(chunks, run(a, b, c, trans_a, trans_b, tiles_g, reps[g], nw, each))
            best[g] = min(best[g], (time.perf_counter() - t0) / reps[g])
    best_pass, costs, whole = best[0], best[1:-2], best[-1]
    # (the packing timed alone, its operand in cache, and cut in equal chunks: the
    # chunks of a short last KC block or panel group take less, so the packing's share
    # of a product on many threads is somewhat under-estimated)
    packing = best[-2] if chunks else 0.0
    scale = max(best_pass - packing, 0.0) / sum(costs)
    return tiles, [t * scale for t in costs], whole, [packing / max(chunks, 1)] * chunks


# Products of configs B-D and tile sizes (rows x columns) for the efficiency table:
# the one-thread time of a product cut into tiles of that size, relative to one call.
EFFICIENCY_SHAPES = ((128, 256, 784), (784, 256, 128), (1024, 256, 784), (256, 256, 1024),
                     (256, 2048, 1024), (256, 2048, 2048), (1024, 2048, 256),
                     (2048, 2048, 256))
EFFICIENCY_TILES = ((64, 64), (128, 128), (128, 256), (256, 128), (256, 256), (512, 128),
                    (512, 256), (256, 512), (512, 512))


def _table_head(columns) -> list[str]:
    """The header rows of a table of EFFICIENCY_SHAPES, one column per cut."""
    return ["| output, inner | unsplit (ms) | " + " | ".join(columns) + " |",
            "|---|---|" + "---|" * len(columns)]


def _shape_operands(m, n, k, dtype):
    """a (m, k), b (k, n) and an output (m, n) of ``dtype`` for one of the tables' shapes
    (seed 0, the same values in both tables)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    return a, b, np.empty((m, n), dtype)


def efficiency_table(dtype, repeats) -> list[str]:
    """Markdown rows: for each shape, the time of the product cut into a grid of tiles of
    each size (the last ones shorter), as a multiple of the unsplit call's time (best
    of ``repeats``, the cuts and the unsplit call interleaved; each pass one compiled
    call, :func:`_tile_runner`)."""
    run = _tile_runner()
    rows = _table_head([f"{r} x {c}" for r, c in EFFICIENCY_TILES])
    for m, n, k in EFFICIENCY_SHAPES:
        a, b, c = _shape_operands(m, n, k, dtype)
        cuts = {(m, n): [(0, m, 0, n)]}
        for tr, tc in EFFICIENCY_TILES:
            if tr <= m and tc <= n and (tr, tc) != (m, n):
                cuts[(tr, tc)] = [(r, min(m, r + tr), q, min(n, q + tc))
                                  for r in range(0, m, tr) for q in range(0, n, tc)]
        best = dict.fromkeys(cuts, float("inf"))
        arrays = {key: np.array(tiles, np.int64) for key, tiles in cuts.items()}
        for rep in range(repeats + 1):
            for key, tiles in arrays.items():
                t0 = time.perf_counter()
                run(a, b, c, False, False, tiles, 1)
                if rep:
                    best[key] = min(best[key], time.perf_counter() - t0)
        whole = best[(m, n)]
        cells = [f"{best[t] / whole:.2f} ({len(cuts[t])})" if t in cuts and t != (m, n)
                 else "" for t in EFFICIENCY_TILES]
        rows.append(f"| {m} x {n}, k {k} | {whole * 1e3:.2f} | " + " | ".join(cells) + " |")
    return rows


SHARED_COLUMN_TILES = (2, 4, 8, 16, 32)


def shared_packing_table(dtype, repeats) -> list[str]:
    """Markdown rows, ``dtype`` on fastnn's own GEMM: for each shape, the time of the
    product cut into 2 to 32 column tiles (gemm_edge's), each tile packing op(a)
    itself / op(a) packed once for them all, as a multiple of the unsplit call's time
    (best of ``repeats``, interleaved; each pass one compiled call)."""
    from fastnn.reference.blas import gemm_edge, gemm_narrowest

    run = _tile_runner()
    rows = _table_head([f"{c} tiles" for c in SHARED_COLUMN_TILES])
    for m, n, k in EFFICIENCY_SHAPES:
        a, b, c = _shape_operands(m, n, k, dtype)
        cuts = {1: (np.array([(0, m, 0, n)], np.int64), 0)}
        for cols in SHARED_COLUMN_TILES:
            if n // cols >= 64:
                tiles = [(0, m, gemm_edge(n, cols, j), gemm_edge(n, cols, j + 1))
                         for j in range(cols)]
                cuts[cols] = (np.array(tiles, np.int64), gemm_narrowest(n, cols))
        best = {(cols, share): float("inf") for cols in cuts for share in (False, True)}
        shared = set()
        for rep in range(repeats + 1):
            for (cols, share) in best:
                tiles, narrowest = cuts[cols]
                t0 = time.perf_counter()
                if run(a, b, c, False, False, tiles, 1, narrowest if share else 0, True):
                    shared.add(cols)
                if rep:
                    best[(cols, share)] = min(best[(cols, share)], time.perf_counter() - t0)
        whole = best[(1, False)]
        # (a cut whose tiles the own GEMM does not take has no shared pack: "-")
        cells = [f"{best[(cols, False)] / whole:.3f} / "
                 + (f"{best[(cols, True)] / whole:.3f}" if cols in shared else "-")
                 if cols in cuts else "" for cols in SHARED_COLUMN_TILES]
        rows.append(f"| {m} x {n}, k {k} | {whole * 1e3:.2f} | " + " | ".join(cells) + " |")
    return rows


def makespan(costs, p: int, tiles: bool = True) -> float:
    """List scheduling in claim order (for ``tiles``, ``gemm_claim``'s over the tiles in
    ``gemm_blocks``' order; else the list's): each task goes to the thread free first."""
    from fastnn.reference.blas import gemm_claim

    free = [0.0] * min(p, len(costs))
    for t in range(len(costs)):
        i = min(range(len(free)), key=free.__getitem__)
        free[i] += costs[gemm_claim(t, len(costs)) if tiles else t]
    return max(free, default=0.0)


def measure_step(cfg, dtype, backend, n_threads, repeats, n_batches=8) -> float:
    """Median seconds per step of ``MLP.train_epoch`` (no shuffle) on ``n_threads``."""
    import fastnn

    batches = make_batches(cfg, dtype, n_batches)
    net = fastnn.MLP(list(cfg.sizes), "relu", loss="cross_entropy", dtype=dtype,
                     backend=backend, random_state=0, n_threads=n_threads)
    opt = fastnn.Adam(lr=1e-3)
    X = np.concatenate([x for x, _ in batches])
    y = np.concatenate([t for _, t in batches])
    X, y = net.check_data(X, y)
    net.train_epoch(X, y, opt, cfg.batch, shuffle=False)  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        net.train_epoch(X, y, opt, cfg.batch, shuffle=False)
        times.append((time.perf_counter() - t0) / n_batches)
    return statistics.median(times)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run(opts) -> str:
    import fastnn
    from fastnn import _blas, _threads

    cpus = _threads.available_cpus()
    lines = [
        "# Scaling of the tiled products",
        "",
        f"CPU: {cpu_model()}, {cpus} usable; BLAS: {_blas.info()['source'].rsplit('/', 1)[-1]}"
        f" (OpenBLAS {_blas.info()['version'] or '?'}, kernel {_blas.info()['kernel']},"
        f" private instance: {_blas.info()['private']},"
        f" own GEMM: {_blas.info()['gemm']});"
        f" fastnn {fastnn.__version__} from {Path(fastnn.__file__).parent};"
        f" OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')};"
        f" load average at start {os.getloadavg()[0]:.2f}",
        f"backend for the measured steps: {opts.backend}; tile costs: best of "
        f"{opts.repeats} calls each; steps: median of {opts.repeats} epochs of 8 steps.",
        "",
    ]
    if opts.efficiency:
        for dtype in opts.dtypes:
            print(f"[scaling] tile efficiency, {dtype}", file=sys.stderr, flush=True)
            lines += [f"## One-thread time of a product cut into tiles, {dtype}", "",
                      "Multiple of the unsplit call's time (number of tiles).", "",
                      *efficiency_table(dtype, opts.repeats), ""]
        for dtype in opts.dtypes if _blas.info()["gemm"] == "fastnn" else ():
            print(f"[scaling] shared packing, {dtype}", file=sys.stderr, flush=True)
            lines += [f"## One-thread time of a product cut into column tiles, {dtype} on "
                      "fastnn's own GEMM", "",
                      "Multiple of the unsplit call's time: each tile packing op(a) itself "
                      "/ op(a) packed once for all the tiles.", "",
                      *shared_packing_table(dtype, opts.repeats), ""]
    summary = []
    for dtype in opts.dtypes:
        for name in opts.configs:
            cfg = CONFIGS[name]
            print(f"[scaling] {cfg.label} {dtype}: tiles", file=sys.stderr, flush=True)
            rows, all_costs, whole_sum = [], [], 0.0
            for what, m, n, k, ta, tb in step_products(cfg):
                tiles, costs, whole, chunks = tile_costs(m, n, k, ta, tb, dtype, opts.repeats)
                all_costs.append((chunks, costs))
                packing = sum(chunks)
                whole_sum += whole
                one = packing + sum(costs)
                rows.append(f"| {what} | {m} x {n}, k {k} | {len(tiles)} | "
                            f"{whole * 1e3:.3f} | {one * 1e3:.3f} | "
                            f"{packing * 1e3:.3f} | {one / whole:.3f} |")
            tiled = sum(sum(p) + sum(c) for p, c in all_costs)
            measured = {}
            for p in opts.threads:
                if p <= cpus and p <= opts.measure_up_to:
                    print(f"[scaling] {cfg.label} {dtype}: step on {p} thread(s)",
                          file=sys.stderr, flush=True)
                    measured[p] = measure_step(cfg, dtype, opts.backend, p, opts.repeats)
            step1 = measured.get(1)
            rest = max(step1 - tiled, 0.0) if step1 is not None else 0.0
            lines += [
                f"## {cfg.label}, {dtype}",
                "",
                "| product | output, inner | tiles | unsplit (ms) | tiles on 1 thread (ms) "
                "| of which op(a) packed once (ms) | ratio |",
                "|---|---|---|---|---|---|---|",
                *rows,
                f"| all | | {sum(len(c) for _, c in all_costs)} | {whole_sum * 1e3:.3f} | "
                f"{tiled * 1e3:.3f} | {sum(sum(p) for p, _ in all_costs) * 1e3:.3f} | "
                f"{tiled / whole_sum:.3f} |",
                "",
            ]
            cut = any(len(c) > 1 for _, c in all_costs)
            if step1 is not None:
                cost = (f"the tiling's one-thread cost against unsplit calls: "
                        f"{(tiled - whole_sum) / step1 * 100:+.1f}% of the step" if cut else
                        "no product is cut: the kernels make the unsplit calls themselves")
                lines += [f"Measured step on 1 thread: {step1 * 1e3:.3f} ms, of which the "
                          f"products {tiled * 1e3:.3f} ms (the rest, {rest * 1e3:.3f} ms, is "
                          f"taken as serial); {cost}.", ""]
            lines += [
                "| threads | products: simulated speed-up | products vs unsplit calls "
                "| step: simulated speed-up | step: measured (ms) | step: measured "
                "speed-up |",
                "|---|---|---|---|---|---|",
            ]
            for p in opts.threads:
                span = sum(makespan(pack, p, False) + makespan(c, p) for pack, c in all_costs)
                sim_step = (rest + tiled) / (rest + span)
                got = measured.get(p)
                lines.append(
                    f"| {p} | {tiled / span:.2f}x | {whole_sum / span:.2f}x | "
                    f"{sim_step:.2f}x | {'' if got is None else f'{got * 1e3:.3f}'} | "
                    f"{'' if got is None or step1 is None else f'{step1 / got:.2f}x'} |")
                summary.append((name, dtype, p, tiled / span, whole_sum / span, sim_step,
                                None if got is None or step1 is None else step1 / got))
            lines.append("")
    lines += ["## Summary: simulated speed-up of the products (measured step speed-up)", "",
              "| config | dtype | " + " | ".join(f"{p} thr" for p in opts.threads) + " |",
              "|---|---|" + "---|" * len(opts.threads)]
    for name in opts.configs:
        for dtype in opts.dtypes:
            cells = []
            for c, d, _p, prod, _, _, meas in summary:
                if c == name and d == dtype:
                    cells.append(f"{prod:.2f}x" + ("" if meas is None else f" ({meas:.2f}x)"))
            lines.append(f"| {name} | {dtype} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _csv(kind):
    return lambda s: [kind(v) for v in s.split(",") if v]


OPENBLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def _unpinned_openblas() -> None:
    """Re-execute without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, as compare.py does
    (OpenBLAS reads them when it is loaded: a pin measures another kernel)."""
    if not any(k in os.environ for k in OPENBLAS_PINS):
        return
    env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_PINS}
    print(f"[scaling] re-running without {', '.join(OPENBLAS_PINS)}", file=sys.stderr)
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]],
              env)


def main(argv=None) -> int:
    if argv is None:
        _unpinned_openblas()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", type=_csv(str), default=list(CONFIGS))
    p.add_argument("--dtypes", type=_csv(str), default=["float32"])
    p.add_argument("--threads", type=_csv(int), default=list(THREADS))
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--backend", default="cython", choices=["cython", "numba"])
    p.add_argument("--measure-up-to", type=int, default=64,
                   help="measure steps on at most this many threads (default: all usable)")
    p.add_argument("--efficiency", action="store_true",
                   help="also time products of B-D cut into tiles of fixed sizes")
    p.add_argument("--out-md", type=Path, help="also write the report here")
    opts = p.parse_args(argv)
    bad = [c for c in opts.configs if c not in CONFIGS]
    if bad:
        p.error(f"unknown configs {bad}; choose from {list(CONFIGS)}")
    report = run(opts)
    print(report)
    if opts.out_md:
        opts.out_md.parent.mkdir(parents=True, exist_ok=True)
        opts.out_md.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
