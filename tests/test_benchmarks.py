"""The asv suite in benchmarks/ loads and runs against this fastnn (no timings checked)."""

import os
import shutil
import subprocess
import sys

import pytest

import fastnn

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)
BENCH = os.path.join(ROOT, "benchmarks")
# the fastnn this process imported (the source tree, or site-packages when installed)
SRC = os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))
ENV = dict(os.environ, PYTHONPATH=SRC, ASV_PYTHONPATH=SRC, FASTNN_BENCH_QUICK="1")


def test_every_benchmark_runs_once_at_its_smallest_size():
    proc = subprocess.run([sys.executable, os.path.join(BENCH, "smoke.py")],
                          capture_output=True, text=True, timeout=900, env=ENV)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert " 0 failed" in proc.stdout


def test_asv_discovers_the_suite():
    pytest.importorskip("asv")
    asv = shutil.which("asv", path=os.path.dirname(sys.executable)) or shutil.which("asv")
    proc = subprocess.run([asv, "check", "--python=same"], cwd=BENCH, capture_output=True,
                          text=True, timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "No problems found" in proc.stdout
