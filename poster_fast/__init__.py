"""poster_fast: POSTER V2 facial expression recognition with fused W-MCSA kernels."""
from . import ops

__version__ = "0.1.0"
__all__ = ["ops"]
