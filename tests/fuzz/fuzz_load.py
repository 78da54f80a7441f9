"""Coverage-guided fuzzing of the model-file loader with atheris (libFuzzer).

Every input is written to a file and given to ``fastnn.load``: it must load or raise
``fastnn.ModelFileError`` (a ValueError); any other exception, a crash or a hang is a
finding. Run it directly for as long as you like::

    python tests/fuzz/fuzz_load.py CORPUS_DIR -max_total_time=600

(``python tests/fuzz/fuzz_load.py --make-corpus CORPUS_DIR`` writes valid files of every
kind to start from). tests/test_fuzz_files.py runs it for a bounded number of inputs
in CI. Needs ``pip install atheris`` (the ``fuzz`` extra).
"""

import os
import sys
import tempfile
import warnings

import atheris
import numpy as np  # noqa: F401  (imported before instrumentation: not fuzzed)

with atheris.instrument_imports(include=["fastnn"]):
    import fastnn
    import fastnn.tabular  # noqa: F401  (the "tabular" kind's loader)
    from fastnn import ModelFileError

_FD, _PATH = tempfile.mkstemp(prefix="fastnn-fuzz-", suffix=".fnn")
os.close(_FD)


def make_corpus(directory):
    """Valid files of every kind (bare model with optimizer and schedule, batch norm,
    float64, estimators, tabular) as seeds."""
    from fastnn.cli import TabularModel

    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    y = (X[:, 0] > 0).astype(int)
    net = fastnn.MLP([3, 4, 2], loss="cross_entropy", backend="numpy", random_state=0)
    net.fit(X, y, optimizer=fastnn.Adam(fastnn.Cosine(0.01, T=5)), epochs=1)
    fastnn.save(net, os.path.join(directory, "model.fnn"))
    bn = fastnn.MLP([3, 4, 1], batch_norm=True, dtype="float64", backend="numpy", random_state=0)
    bn.fit(X, X[:, 0], optimizer=fastnn.SGD(0.01), epochs=1)
    fastnn.save(bn, os.path.join(directory, "bn64.fnn"))
    fastnn.save(net, os.path.join(directory, "noopt.fnn"), include_optimizer=False)
    tab = TabularModel(net, ["a", "b", "c"], "y", "classify", ["x", "z"], np.zeros(3), np.ones(3))
    fastnn.save(tab, os.path.join(directory, "tabular.fnn"))
    try:
        from fastnn import MLPClassifier
    except ImportError:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = MLPClassifier((3,), max_iter=2, random_state=0).fit(X, np.array(["a", "b"])[y])
    fastnn.save(clf, os.path.join(directory, "classifier.fnn"))


def TestOneInput(data: bytes) -> None:
    with open(_PATH, "wb") as f:
        f.write(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fastnn.load(_PATH)
    except ModelFileError:
        pass


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--make-corpus":
        make_corpus(sys.argv[2])
        return
    atheris.Setup(sys.argv, TestOneInput)
    try:
        atheris.Fuzz()
    finally:
        os.unlink(_PATH)


if __name__ == "__main__":
    main()
