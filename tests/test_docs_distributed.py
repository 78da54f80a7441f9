"""The recipes of docs/distributed.md run as written: every ```python block is a
complete script, run in a fresh interpreter (it starts its own LocalCluster). The
three scripts start together: most of their time is interpreters and worker processes
starting up."""

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("distributed")
pytest.importorskip("sklearn")

DOC = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "distributed.md")
# What each recipe is about, in the order of the page.
RECIPES = ["parallel_search", "optimize_on_dask", "fit_blocks"]


def _recipes() -> list[str]:
    with open(DOC, encoding="utf-8") as fh:
        return re.findall(r"```python\n(.*?)```", fh.read(), flags=re.S)


def test_the_doc_has_the_three_recipes():
    recipes = _recipes()
    assert len(recipes) == len(RECIPES)
    for code, piece in zip(recipes, RECIPES):
        assert f"fastnn.dask.{piece}(" in code


def _runnable(code: str) -> bool:
    if "import optuna" not in code:
        return True
    try:
        import optuna  # noqa: F401
        import optuna_integration  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """The runnable recipes, each started as a script: {index: (Popen, folder)}."""
    # The scripts run elsewhere: they (and their workers) must import the fastnn
    # imported here, so that package's parent goes first on an absolute PYTHONPATH.
    import fastnn

    paths = [os.path.dirname(os.path.dirname(os.path.abspath(fastnn.__file__)))]
    paths += [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    procs = {}
    for index, code in enumerate(_recipes()):
        if not _runnable(code):
            continue
        folder = tmp_path_factory.mktemp(f"recipe_{index}")
        script = folder / "recipe.py"
        script.write_text(code, encoding="utf-8")
        # Output to files, not pipes: a script blocked on a full pipe while another
        # is waited for would stall its cluster.
        with open(folder / "out.txt", "w") as out, open(folder / "err.txt", "w") as err:
            procs[index] = (
                subprocess.Popen(
                    [sys.executable, str(script)], cwd=folder, env=env, stdout=out, stderr=err
                ),
                folder,
            )
    yield procs
    for proc, _ in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("index", range(len(RECIPES)), ids=RECIPES)
def test_recipe_runs_as_written(index, started):
    if index not in started:
        pytest.skip("the recipe needs optuna and optuna-integration")
    proc, folder = started[index]
    returncode = proc.wait(timeout=900)
    assert returncode == 0, (folder / "err.txt").read_text()[-3000:]
    out = (folder / "out.txt").read_text()
    assert out.strip(), "the recipe prints its result"
    if RECIPES[index] == "optimize_on_dask":  # every trial its own parameters
        assert "12 distinct parameter sets in 12 trials" in out, out
