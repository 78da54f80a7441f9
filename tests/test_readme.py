"""The README's Python examples run as written."""

import os
import re
import warnings

import pytest

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def _blocks():
    with open(README, encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    code = _blocks()[index]
    for module in ("sklearn", "onnx", "onnxruntime", "skl2onnx"):  # optional extras
        if module in code:
            pytest.importorskip(module)
    monkeypatch.chdir(tmp_path)  # examples may save files
    with warnings.catch_warnings():
        # the digits example stops at max_iter, as scikit-learn's would, and says so
        warnings.filterwarnings("ignore", message="Stochastic Optimizer: Maximum iterations")
        exec(compile(code, f"README.md example {index}", "exec"), {})
