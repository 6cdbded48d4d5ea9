"""A source checkout's four top-level folders, imported as ``rnnforge.<folder>``.

The design card keeps ``cluster/``, ``pipeline/``, ``models/`` and ``export/`` at the repository's
top level; a wheel (or ``pip install -e .``) ships them inside the namespace through
``pyproject.toml``'s ``package-dir``. A checkout used without installing it (``ray job submit
--working-dir .`` uploads one) has no such mapping, so ``import rnnforge`` installs this finder:
it answers for exactly those four names, so the checkout's other folders (``tests``,
``benchmarks``, ``rnnforge`` itself) never become ``rnnforge.tests`` and the like.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

#: The folders pyproject.toml's package-dir ships as ``rnnforge.<folder>``.
FOLDERS = ("cluster", "pipeline", "models", "export")


class CheckoutFolders(importlib.abc.MetaPathFinder):
    """Finds ``rnnforge.<folder>`` for each of ``FOLDERS`` in ``checkout``; their submodules
    follow from the package's own ``__path__``."""

    def __init__(self, checkout: Path):
        self.checkout = checkout

    def find_spec(self, name, path=None, target=None):
        package, _, folder = name.partition(".")
        if package != "rnnforge" or folder not in FOLDERS:
            return None
        init = self.checkout / folder / "__init__.py"
        return importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])


def install_checkout_folders(package_dir: Path) -> None:
    """When ``package_dir`` (``rnnforge/``) sits in a source checkout, find the four folders beside
    it first (before an install of another checkout); elsewhere (a wheel) do nothing."""
    checkout = package_dir.resolve().parent
    if not (checkout / "pyproject.toml").is_file() or not (checkout / "models" / "__init__.py").is_file():
        return
    if not any(isinstance(f, CheckoutFolders) and f.checkout == checkout for f in sys.meta_path):
        sys.meta_path.insert(0, CheckoutFolders(checkout))
