"""Package names that load on first use (PEP 562): a package's __init__.py maps each public
name to the submodule that defines it, so that importing the package imports no torch
(standard library only)."""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_names(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for a package.

    Args:
        package: the package's `__name__`.
        names: each public name -> the module, relative to the package, that defines it; a
            name mapped to itself (`"ops": ".ops"`) is that submodule.

    Returns:
        The two functions, to assign to the package's `__getattr__` and `__dir__`. A name is
        imported on its first lookup, then kept in the package.
    """
    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(names[name], package)
        value = module if names[name] == f".{name}" else getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
