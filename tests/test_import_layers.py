"""The import contract of pyproject.toml ([tool.importlinter]): every module imports only from the
layers below its own, and no two modules of a package import each other in a circle. lint-imports
keeps it on the tree, and breaks it on a copy given an upward import or a circle."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter is not installed (the Makefile's DEPS install it)")

ROOT = Path(__file__).resolve().parents[1]
LINT = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")


def lint(package_parent: Path) -> subprocess.CompletedProcess:
    """lint-imports with the repository's contract on the poster_fast package in `package_parent`."""
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run([LINT, "--no-cache", str(ROOT / "pyproject.toml")], cwd=package_parent, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_tree_keeps_the_contract():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_an_upward_import_and_a_circle_break_it(tmp_path):
    package = tmp_path / "poster_fast"
    shutil.copytree(ROOT / "poster_fast", package, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    with open(package / "errors.py", "a") as f:
        f.write("\nfrom .commands import cli  # noqa: E402,F401\n")
    with open(package / "inference" / "crops.py", "a") as f:
        f.write("\nfrom . import predict  # noqa: E402,F401\n")
    result = lint(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Contracts: 0 kept, 2 broken." in result.stdout
    assert "poster_fast.errors is not allowed to import poster_fast.commands" in result.stdout
    circles = result.stdout.split("no circles")[-1]
    assert "poster_fast.inference" in circles and "- .crops -> .predict (1 import)" in circles
