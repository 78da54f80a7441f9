"""A process may fork while another of its threads trains, and the child may train too.

OpenBLAS's threaded products hold its level-3 lock and its thread pool; a fork taken
while another thread is inside one copied the lock locked (the child hung in its first
product) and left the parent waiting on threads the fork handler had stopped. fastnn's
products run on its own single-threaded BLAS instance (fastnn._blas), which takes
neither, so forking is safe. Each scenario runs in a child interpreter with a time
limit, so a regression fails instead of hanging the suite.
"""

import subprocess
import sys

import pytest

import fastnn
from _reliability_record import record

BACKENDS = fastnn.available_backends()
_DONE = []
# Forks taken while the other thread trains, per backend.
N_FORKS = 6

SCENARIO = r"""
import faulthandler, multiprocessing as mp, os, sys, threading
faulthandler.dump_traceback_later(300, exit=True)  # a hang ends the child, not the suite
import numpy as np
import fastnn

backend, n_forks = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
X = rng.standard_normal((1024, 256)).astype(np.float32)
y = rng.integers(0, 2, 1024)

def train():
    net = fastnn.MLP([256, 512, 512, 2], loss="cross_entropy", random_state=0,
                     backend=backend, n_threads=2)
    net.fit(X, y, epochs=1, batch_size=128, verbose=0)
    return net.params

expected = train()
stop = threading.Event()
rounds = [0]

def background():
    while not stop.is_set():
        assert np.array_equal(train(), expected)
        rounds[0] += 1

def child():
    os._exit(0 if np.array_equal(train(), expected) else 3)

t = threading.Thread(target=background)
t.start()
ctx = mp.get_context("fork")
codes = []
for _ in range(n_forks):
    p = ctx.Process(target=child)
    p.start()
    p.join(120)
    codes.append(p.exitcode)
    if p.exitcode is None:
        p.kill()
        break
stop.set()
t.join(120)
print("codes", codes, "background-alive", t.is_alive(), "rounds", rounds[0], flush=True)
os._exit(0 if codes == [0] * n_forks and not t.is_alive() else 1)  # even if t hangs
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_forking_while_a_thread_trains_never_deadlocks(backend):
    run = subprocess.run(
        [sys.executable, "-c", SCENARIO, backend, str(N_FORKS)],
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert run.returncode == 0, (run.stdout, run.stderr)
    _DONE.append(backend)


def test_forks_recorded():
    if len(_DONE) < len(BACKENDS):
        pytest.skip("not every fork case ran in this session")
    record(
        "concurrency.fork",
        "forks",
        "a 'fork' child started while another thread trains ([256, 512, 512, 2], "
        "n_threads=2), the child training the same model, every backend",
        N_FORKS * len(BACKENDS),
        "no deadlock (each child and the training thread end within their time "
        "limits); the child's and the thread's weights equal a training done alone",
    )
