"""The recipes of docs/distributed.md run as written: every ```python block is a
complete script, run in a fresh interpreter (it starts its own LocalCluster)."""

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("distributed")
pytest.importorskip("sklearn")

DOC = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "distributed.md")


def _recipes() -> list[str]:
    with open(DOC, encoding="utf-8") as fh:
        return re.findall(r"```python\n(.*?)```", fh.read(), flags=re.S)


def test_the_doc_has_three_recipes():
    names = [re.search(r"^# |fit_blocks|optimize_on_dask|parallel_search", r, re.M)
             for r in _recipes()]
    assert len(names) == 3 and all(names)


@pytest.mark.parametrize("index", range(3), ids=["search", "optuna", "out_of_core"])
def test_recipe_runs_as_written(index, tmp_path):
    code = _recipes()[index]
    if "import optuna" in code:
        pytest.importorskip("optuna")
        pytest.importorskip("optuna_integration")
    script = tmp_path / f"recipe_{index}.py"
    script.write_text(code, encoding="utf-8")
    # The script runs elsewhere: it (and its workers) must import the fastnn imported
    # here, so that package's parent goes first on an absolute PYTHONPATH.
    import fastnn
    paths = [os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))]
    paths += [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
              if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()
    assert last, "the recipe prints its result"
