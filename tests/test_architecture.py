"""The layers point one way, and no module imports itself back.

    core (0) <- pipeline (1) <- models (2) <- cluster (3), export (3) <- cli, demo (4)

cluster and export stand side by side: both sit above models and below the app, and neither
imports the other. The test reads every module's imports (``ast``, nothing is imported) from
the folders the wheel ships, and fails on:

- an import that runs up a layer or across to the other package of the same layer, with
  ``from PACKAGE import NAME`` taken as the module ``PACKAGE.NAME`` where that is a module (so
  ``from rnnforge import cli`` inside the core is the app, not the package root);
- a generic top-level name (``import models``: the wheel ships only ``rnnforge``), or a private
  name (``_x``) taken from another module;
- any import cycle between modules, counting every import wherever it stands: at module level,
  inside a function and under ``TYPE_CHECKING`` alike (a lazy import still ties the two modules
  together);
- a dynamic import table (the strings of a module that calls ``importlib.import_module``, e.g.
  ``models/__init__.py``'s ``TASK_MODULES``) naming a module that does not exist or that its
  module could not import.

Each rule is proven by a test that plants the bad import in a copy of the tree and sees it fail.
"""

from __future__ import annotations

import ast
import functools
import shutil
from pathlib import Path

import pytest
from conftest import ROOT

#: Folder -> dotted package, as pyproject.toml's package-dir ships them.
PACKAGES = {
    "rnnforge": "rnnforge",
    "pipeline": "rnnforge.pipeline",
    "models": "rnnforge.models",
    "cluster": "rnnforge.cluster",
    "export": "rnnforge.export",
}
#: Module prefix -> (layer, level): the longest prefix wins. A module may import its own layer
#: and the layers of lower levels; two layers of one level (cluster, export) import neither way.
LAYERS = {
    "rnnforge": ("core", 0),  # the package root only sets the environment (rnnforge.core.env)
    "rnnforge.core": ("core", 0),
    "rnnforge.pipeline": ("pipeline", 1),
    "rnnforge.models": ("models", 2),
    "rnnforge.cluster": ("cluster", 3),
    "rnnforge.export": ("export", 3),
    "rnnforge.cli": ("app", 4),
    "rnnforge.demo": ("app", 4),
    "rnnforge.serving": ("app", 4),  # the public serving API (uses export)
    "rnnforge.__main__": ("app", 4),
    "rnnforge.docs_cli": ("app", 4),  # writes docs/cli.md from the CLI
    "rnnforge.transcript": ("app", 4),  # writes the README's demo transcript from a demo run
}
GENERIC = {"models", "pipeline", "export", "cluster"}
#: Names a benchmark must not import to train: it trains through cluster.fit, as the Ray worker does.
OWN_TRAINING = {"compile_model", "worker_dataset", "validation_batches", "early_stopping", "steps_per_epoch"}


def layer_of(module: str) -> tuple[str, int]:
    return LAYERS[max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)]


def layer(module: str) -> int:
    """The level of ``module``'s layer."""
    return layer_of(module)[1]


def may_import(module: str, target: str) -> bool:
    (own, level), (other, other_level) = layer_of(module), layer_of(target)
    return other == own or other_level < level


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module the wheel ships."""
    modules = {}
    for folder, package in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


@functools.cache
def _parse(text: str) -> ast.Module:
    """The syntax tree of a file's text (the planted copies share all but one file with the tree)."""
    return ast.parse(text)


def imports(path: Path, module: str) -> list[tuple[int, str, list[str]]]:
    """``(line, imported module, names)`` of every import in ``path``, relative ones resolved."""
    found = []
    for node in ast.walk(_parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[: len(module.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join([*package, base] if base else package)
            found.append((node.lineno, base, [alias.name for alias in node.names]))
    return found


def resolved_imports(path: Path, module: str, modules) -> list[tuple[int, str, list[str]]]:
    """``imports``, with ``from PACKAGE import NAME`` split into ``PACKAGE.NAME`` where that is a module."""
    found = []
    for line, target, names in imports(path, module):
        submodules = [n for n in names if f"{target}.{n}" in modules]
        found += [(line, f"{target}.{n}", []) for n in submodules]
        if not names or len(submodules) < len(names):
            found.append((line, target, [n for n in names if n not in submodules]))
    return found


def layer_problems(root: Path = ROOT) -> list[str]:
    """Upward and sideways imports, generic top-level names, private names from other modules."""
    modules = package_modules(root)
    problems = []
    for module, path in modules.items():
        for line, target, names in resolved_imports(path, module, modules):
            where = f"{path.relative_to(root)}:{line}"
            if target.split(".")[0] in GENERIC:
                problems.append(f"{where} imports the generic top-level {target!r}; use rnnforge.{target}")
            if target != "rnnforge" and not target.startswith("rnnforge."):
                continue
            if not may_import(module, target):
                problems.append(f"{where}: {module} ({layer_of(module)[0]}) imports {target} ({layer_of(target)[0]})")
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and not module.startswith(target):
                problems.append(f"{where}: {module} takes private {', '.join(private)} from {target}")
    return problems


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the package modules it imports (every import, wherever it stands in the file)."""
    modules = package_modules(root)
    graph = {}
    for module, path in modules.items():
        targets = set()
        for _, target, _ in resolved_imports(path, module, modules):
            while target and target not in modules:  # `import a.b.c` of a name: its module
                target = target.rpartition(".")[0]
            if target and target != module:
                targets.add(target)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def dynamic_import_problems(root: Path = ROOT) -> list[str]:
    """Every ``rnnforge.`` string of a module that calls ``importlib.import_module`` must name a
    module of the tree that this module may import."""
    modules = package_modules(root)
    problems = []
    for module, path in modules.items():
        tree = _parse(path.read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "import_module"]
        if not calls:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("rnnforge."):
                where = f"{path.relative_to(root)}:{node.lineno}"
                if node.value not in modules:
                    problems.append(f"{where}: {node.value!r} is not a module of rnnforge")
                elif not may_import(module, node.value):
                    problems.append(f"{where}: {module} ({layer_of(module)[0]}) imports {node.value} dynamically")
    return problems


def test_every_import_points_down_the_layers():
    modules = package_modules()
    assert {
        "rnnforge.cli",
        "rnnforge.core.run_dir",
        "rnnforge.models.sketch",
        "rnnforge.export.bench",
        "rnnforge.cluster.worker",
        "rnnforge.pipeline.sketch_rnn",
    } <= set(modules)
    problems = layer_problems()
    assert not problems, "\n".join(problems)


def test_no_import_cycle():
    graph = import_graph()
    assert "rnnforge.cluster.fit" in graph["rnnforge.cluster.worker"]  # the graph is read
    found = cycles(graph)
    assert not found, "\n".join(" <-> ".join(c) for c in found)


def test_the_dynamic_import_tables_name_real_modules_in_reach():
    problems = dynamic_import_problems()
    assert not problems, "\n".join(problems)


def test_benchmarks_use_public_names_only():
    problems = []
    for path in sorted((ROOT / "benchmarks").rglob("*.py")):
        for line, target, names in imports(path, "benchmarks." + path.stem):
            if target.split(".")[0] in GENERIC:
                problems.append(f"{path.name}:{line} imports the generic top-level {target!r}")
            private = [n for n in names if n.startswith("_")]
            if target.startswith("rnnforge") and private:
                problems.append(f"{path.name}:{line} takes private {', '.join(private)} from {target}")
    assert not problems, "\n".join(problems)


def test_benchmarks_train_through_the_shared_fit():
    """No benchmark builds its own model, batches or early stopping: it trains as a Ray worker does."""
    problems = []
    for path in sorted((ROOT / "benchmarks").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for line, target, names in imports(path, "benchmarks." + path.stem):
            if target.startswith("rnnforge") and set(names) & OWN_TRAINING:
                problems.append(f"{path.name}:{line} imports {sorted(set(names) & OWN_TRAINING)} from {target}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "build_model":
                problems.append(f"{path.name}:{node.lineno} builds a model itself; use rnnforge.cluster.fit.prepare")
    assert not problems, "\n".join(problems)


def test_the_layer_check_catches_an_upward_import(tmp_path):
    """The checker itself: an upward import in a module is reported."""
    bad = tmp_path / "run_dir.py"
    bad.write_text("from rnnforge.models import TASKS\nfrom . import fileio\n")
    found = imports(bad, "rnnforge.core.run_dir")
    assert found == [(1, "rnnforge.models", ["TASKS"]), (2, "rnnforge.core", ["fileio"])]
    assert layer(found[0][1]) > layer("rnnforge.core.run_dir")
    assert layer("rnnforge.export.bench") == 3 and layer("rnnforge.cli") == 4 and layer("rnnforge") == 0


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of the package's Python files, to plant bad imports in."""
    for folder in PACKAGES:
        for path in (ROOT / folder).rglob("*.py"):
            target = tmp_path / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    assert not layer_problems(tmp_path) and not cycles(import_graph(tmp_path))
    assert not dynamic_import_problems(tmp_path)
    return tmp_path


def _plant(tree: Path, file: str, code: str, replace: str | None = None) -> None:
    path = tree / file
    text = path.read_text()
    if replace is None:
        path.write_text(text + "\n" + code + "\n")
    else:
        assert replace in text
        path.write_text(text.replace(replace, code))


@pytest.mark.parametrize(
    "file, code, expected",
    [
        (
            "rnnforge/core/errors.py",
            "from rnnforge import cli",
            "rnnforge.core.errors (core) imports rnnforge.cli (app)",
        ),
        ("rnnforge/core/fileio.py", "from .. import demo", "rnnforge.core.fileio (core) imports rnnforge.demo (app)"),
        (
            "export/bench.py",
            "from rnnforge.cluster import fit",
            "rnnforge.export.bench (export) imports rnnforge.cluster.fit",
        ),
        (
            "cluster/launch.py",
            "import rnnforge.export.results",
            "rnnforge.cluster.launch (cluster) imports rnnforge.export",
        ),
        (
            "models/spec.py",
            "from rnnforge.cluster.fit import prepare",
            "rnnforge.models.spec (models) imports rnnforge.cluster",
        ),
    ],
    ids=["from-root-import-app", "relative-app", "export-to-cluster", "cluster-to-export", "upward"],
)
def test_a_planted_upward_or_sideways_import_fails(tree, file, code, expected):
    _plant(tree, file, code)
    assert any(expected in p for p in layer_problems(tree)), layer_problems(tree)


def test_a_planted_cycle_fails_even_inside_a_function(tree):
    """cluster.worker imports cluster.fit; a lazy import back closes a cycle within one layer."""
    _plant(tree, "cluster/fit.py", "def _back():\n    from rnnforge.cluster import worker\n\n    return worker")
    assert not layer_problems(tree)
    assert ["rnnforge.cluster.fit", "rnnforge.cluster.worker"] in cycles(import_graph(tree))


@pytest.mark.parametrize(
    "code, expected",
    [
        ('"rnnforge.models.vidoe"', "'rnnforge.models.vidoe' is not a module of rnnforge"),
        ('"rnnforge.cli"', "rnnforge.models (models) imports rnnforge.cli dynamically"),
    ],
    ids=["missing", "upward"],
)
def test_a_planted_dynamic_import_fails(tree, code, expected):
    _plant(tree, "models/__init__.py", code, replace='"rnnforge.models.video"')
    assert any(expected in p for p in dynamic_import_problems(tree)), dynamic_import_problems(tree)


def test_a_source_checkout_exposes_exactly_the_four_folders():
    """Uninstalled (``-S``: no site-packages, so no editable install; as a ``ray job submit
    --working-dir .`` upload runs), ``import rnnforge`` finds cluster/, pipeline/, models/ and
    export/ as ``rnnforge.<folder>``, and no other folder of the checkout."""
    import subprocess
    import sys

    code = (
        "import importlib.util, rnnforge.models, rnnforge.cluster, rnnforge.pipeline, rnnforge.export\n"
        "print(rnnforge.models.__file__)\n"
        "print([n for n in ('rnnforge.tests', 'rnnforge.benchmarks', 'rnnforge.rnnforge', 'rnnforge.docs')"
        " if importlib.util.find_spec(n)])"
    )
    done = subprocess.run([sys.executable, "-S", "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    models_file, hidden = done.stdout.splitlines()
    assert models_file == str(ROOT / "models" / "__init__.py") and hidden == "[]"
