"""An unbuilt source tree imports with a message that says how to build it."""

import os
import shutil
import subprocess
import sys

import fastnn

PACKAGE = os.path.dirname(os.path.abspath(fastnn.__file__))

SCRIPT = """
import warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import fastnn
print("WARNING:", [str(w.message) for w in caught if issubclass(w.category, fastnn.BuildWarning)])
print("DEFAULT:", fastnn.default_backend_name())
try:
    fastnn.backend("cython")
except ImportError as exc:
    print("IMPORTERROR:", exc)
print("NUMPY:", float(fastnn.backend("numpy").relu([-1.0, 2.0]).sum()))
"""


def test_unbuilt_tree_says_how_to_build(tmp_path):
    # the Python sources of the package without any compiled extension
    shutil.copytree(
        PACKAGE, tmp_path / "fastnn", ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__")
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    env.pop("FASTNN_BACKEND", None)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "python setup.py build_ext --inplace" in out.split("WARNING:")[1].split("\n")[0]
    assert "DEFAULT: numba" in out
    assert "IMPORTERROR:" in out and "pip install ." in out.split("IMPORTERROR:")[1]
    assert "NUMPY: 2.0" in out


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _distribution_name():
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        return tomllib.load(fh)["project"]["name"]


def test_install_hints_name_this_distribution():
    """ "fastnn" on the package index is another project: every `pip install NAME[extra]`
    hint in the code and the docs names this project's distribution, and extras refer
    to it too."""
    import re

    name = _distribution_name()
    assert name != "fastnn"
    hint = re.compile(r"pip install ['\"]?([A-Za-z0-9_.-]+)\[")
    files = [
        os.path.join(d, f)
        for base in ("src/fastnn", "docs")
        for d, _, fs in os.walk(os.path.join(ROOT, base))
        for f in fs
        if f.endswith((".py", ".md"))
    ]
    files.append(os.path.join(ROOT, "README.md"))
    import pathlib

    wrong = [
        (path, m.group(0))
        for path in files
        for m in hint.finditer(pathlib.Path(path).read_text(encoding="utf-8"))
        if m.group(1) not in (name, ".")
    ]
    assert not wrong, wrong
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as fh:
        assert "fastnn[" not in fh.read()


def test_the_version_is_written_once():
    from importlib import metadata

    try:
        installed = metadata.version(_distribution_name())
    except metadata.PackageNotFoundError:  # a source tree on PYTHONPATH
        return
    assert installed == fastnn.__version__
