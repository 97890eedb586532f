"""The POSTER V2 network, one file per part: landmark net, image net, cross-fusion, fusion ViT.

LEVELS (levels.py: the three cross-fusion levels' shapes) is plain data; POSTERV2 loads, with
torch, on first use.
"""
from __future__ import annotations

from ..lazy import lazy_names
from .levels import LEVELS, Level

__all__ = ["POSTERV2", "LEVELS", "Level"]

__getattr__, __dir__ = lazy_names(__name__, {"POSTERV2": ".posterv2"})
