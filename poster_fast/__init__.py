"""poster_fast: POSTER V2 facial expression recognition with fused W-MCSA kernels."""
from . import ops
from .checkpoint import CheckpointError, LoadReport, load_backbones, load_checkpoint
from .model import POSTERV2
from .optimize import optimize

__version__ = "0.1.0"
__all__ = ["POSTERV2", "optimize", "load_checkpoint", "load_backbones", "CheckpointError", "LoadReport", "ops"]
