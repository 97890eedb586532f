"""poster_fast: POSTER V2 facial expression recognition with fused W-MCSA kernels.

The public names load on first use (PEP 562), so `import poster_fast` and `poster-fast --help`
import neither torch nor the command-line modules' dependencies.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import CheckpointError
from .lazy import lazy_names
from .optimize import optimize
from .version import __version__

if TYPE_CHECKING:
    from . import ops
    from .inference.recognizer import Recognizer
    from .model import POSTERV2
    from .pretrained import LoadReport, load_backbones, load_checkpoint

__all__ = ["POSTERV2", "Recognizer", "optimize", "load_checkpoint", "load_backbones", "CheckpointError", "LoadReport",
           "ops"]

__getattr__, __dir__ = lazy_names(__name__, {
    "POSTERV2": ".model", "Recognizer": ".inference.recognizer", "load_checkpoint": ".pretrained", "load_backbones": ".pretrained",
    "LoadReport": ".pretrained", "ops": ".ops"})
