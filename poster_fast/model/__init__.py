"""The POSTER V2 network, one file per part: landmark net, image net, cross-fusion, fusion ViT."""
from .posterv2 import POSTERV2

__all__ = ["POSTERV2"]
