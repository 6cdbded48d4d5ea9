"""The layers point one way: every import inside the package goes to its own layer or one below.

    core (0) <- pipeline (1) <- models (2) <- cluster (3) <- export (4) <- cli, demo (5)

The test reads every module's imports (``ast``, nothing is imported) from the folders the wheel
ships, maps each to its layer, and fails on an import that runs up a layer, on a generic
top-level name (``import models``: the wheel ships only ``rnnforge``), and on a private name
(``_x``) taken from another module.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

#: Folder -> dotted package, as pyproject.toml's package-dir ships them.
PACKAGES = {
    "rnnforge": "rnnforge",
    "pipeline": "rnnforge.pipeline",
    "models": "rnnforge.models",
    "cluster": "rnnforge.cluster",
    "export": "rnnforge.export",
}
#: Module prefix -> layer (the longest prefix wins).
LAYERS = {
    "rnnforge": 0,  # the package root only sets the environment (rnnforge.core.env)
    "rnnforge.core": 0,
    "rnnforge.pipeline": 1,
    "rnnforge.models": 2,
    "rnnforge.cluster": 3,
    "rnnforge.export": 4,
    "rnnforge.cli": 5,
    "rnnforge.demo": 5,
    "rnnforge.serving": 5,  # the public serving API (uses export)
    "rnnforge.__main__": 5,
}
GENERIC = {"models", "pipeline", "export", "cluster"}


def layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def package_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module the wheel ships."""
    modules = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def imports(path: Path, module: str) -> list[tuple[int, str, list[str]]]:
    """``(line, imported module, names)`` of every import in ``path``, relative ones resolved."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[: len(module.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join([*package, base] if base else package)
            found.append((node.lineno, base, [alias.name for alias in node.names]))
    return found


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
    problems = []
    for module, path in modules.items():
        for line, target, names in imports(path, module):
            where = f"{path.relative_to(ROOT)}:{line}"
            if target.split(".")[0] in GENERIC:
                problems.append(f"{where} imports the generic top-level {target!r}; use rnnforge.{target}")
            if target != "rnnforge" and not target.startswith("rnnforge."):
                continue
            if layer(target) > layer(module):
                problems.append(f"{where}: {module} (layer {layer(module)}) imports {target} (layer {layer(target)})")
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and not module.startswith(target):
                problems.append(f"{where}: {module} takes private {', '.join(private)} from {target}")
    assert not problems, "\n".join(problems)


def test_benchmarks_use_public_names_only():
    problems = []
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        for line, target, names in imports(path, "benchmarks." + path.stem):
            if target.split(".")[0] in GENERIC:
                problems.append(f"{path.name}:{line} imports the generic top-level {target!r}")
            private = [n for n in names if n.startswith("_")]
            if target.startswith("rnnforge") and private:
                problems.append(f"{path.name}:{line} takes private {', '.join(private)} from {target}")
    assert not problems, "\n".join(problems)


def test_the_layer_check_catches_an_upward_import(tmp_path):
    """The checker itself: an upward import in a module is reported."""
    bad = tmp_path / "run_dir.py"
    bad.write_text("from rnnforge.models import TASKS\nfrom . import fileio\n")
    found = imports(bad, "rnnforge.core.run_dir")
    assert found == [(1, "rnnforge.models", ["TASKS"]), (2, "rnnforge.core", ["fileio"])]
    assert layer(found[0][1]) > layer("rnnforge.core.run_dir")
    assert layer("rnnforge.export.bench") == 4 and layer("rnnforge.cli") == 5 and layer("rnnforge") == 0
