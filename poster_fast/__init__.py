"""poster_fast: POSTER V2 facial expression recognition with fused W-MCSA kernels.

The public names load on first use (PEP 562), so `import poster_fast` and `poster-fast --help`
import neither torch nor the command-line modules' dependencies.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import CheckpointError
from .optimize import optimize

if TYPE_CHECKING:
    from . import ops
    from .checkpoint import LoadReport, load_backbones, load_checkpoint
    from .model import POSTERV2

__version__ = "0.1.0"
__all__ = ["POSTERV2", "optimize", "load_checkpoint", "load_backbones", "CheckpointError", "LoadReport", "ops"]

_LAZY = {"POSTERV2": ".model", "load_checkpoint": ".checkpoint", "load_backbones": ".checkpoint",
         "LoadReport": ".checkpoint"}


def __getattr__(name: str) -> Any:
    if name == "ops":
        return importlib.import_module(".ops", __name__)
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
