"""fastnn's modules import without cycles, and each one imports on its own.

The graph is read from the sources with ``ast``: an edge A -> B for every ``import`` of
a fastnn module B that runs when A is imported (at module level, in class bodies, in
``try``/``if`` blocks; not inside functions, which run later, nor under
``if TYPE_CHECKING``). A cycle there means a module can be met half-initialised,
depending on which one a user imports first; this test fails when one appears.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastnn

SRC = Path(fastnn.__file__).resolve().parent.parent


def _module_files() -> dict[str, Path]:
    files = {}
    for path in sorted((SRC / "fastnn").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


MODULES = _module_files()


def _imports_run_at_import(body):
    """The Import/ImportFrom nodes executed when a module (or class) body runs."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _imports_run_at_import(node.orelse)
        else:
            for name in ("body", "orelse", "finalbody", "handlers"):
                yield from _imports_run_at_import(getattr(node, name, None) or [])


def _imported_modules(name: str, node, is_package: bool) -> set[str]:
    """The fastnn modules an import statement in module ``name`` imports."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        if node.level:
            package = name if is_package else name.rpartition(".")[0]
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1])
            base = f"{base}.{node.module}" if node.module else base
        else:
            base = node.module or ""
        # `from package import name` imports the submodule when there is one, else it
        # reads an attribute of the package (its __init__ must have run).
        targets = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
            for alias in node.names
        ]
    return {t for t in targets if t in MODULES and t != name}


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: set[str] = set()
        for node in _imports_run_at_import(tree.body):
            edges |= _imported_modules(name, node, path.name == "__init__.py")
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for succ in sorted(graph[node]):
            if state.get(succ) == 1:
                return path[path.index(succ) :] + [succ]
            if succ not in state:
                found = visit(succ)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_sees_real_imports():
    graph = import_graph(MODULES)
    # spot checks that the parser resolves relative and package imports
    assert "fastnn.model" in graph["fastnn"]
    assert "fastnn._validation" in graph["fastnn.training"]
    assert "fastnn.dask.search" in graph["fastnn.dask.optuna"]
    assert "fastnn.reference.masks" in graph["fastnn.layers"]


def test_find_cycle_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_fastnn_modules_have_no_import_cycle():
    cycle = find_cycle(import_graph(MODULES))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_training_loop_does_not_import_the_model_module():
    # The loop takes a model; it must not need fastnn.model, not even inside a
    # function (model.py imports the loop, so that would be the cycle back).
    tree = ast.parse((SRC / "fastnn" / "training.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            assert "fastnn.model" not in _imported_modules("fastnn.training", node, False), (
                ast.unparse(node)
            )


def test_the_estimators_use_no_private_name_of_the_training_loop():
    # They drive training.run_epochs; reaching into the loop's internals (as they once
    # took its _DeferredInterrupt) would let the two loops drift apart again.
    tree = ast.parse((SRC / "fastnn" / "estimators.py").read_text(encoding="utf-8"))
    names = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and _imported_modules("fastnn.estimators", node, False) == {"fastnn.training"}
        for alias in node.names
    }
    assert "run_epochs" in names
    assert not [name for name in names if name.startswith("_")], names


PUBLIC = sorted(
    name for name in MODULES if not any(part.startswith("_") for part in name.split("."))
)


@pytest.mark.parametrize("module", PUBLIC)
def test_each_public_module_imports_first_in_a_fresh_interpreter(module):
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
