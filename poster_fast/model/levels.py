"""POSTER V2's three cross-fusion levels, the one statement of their W-MCSA shapes (standard
library only: the command line reads them without importing torch)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Level:
    """One cross-fusion level: a `window` x `window` map of `dim` channels (one window per
    image), attending to landmark queries split into `heads` heads."""

    dim: int
    heads: int
    window: int

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def tokens(self) -> int:
        """N, the tokens of a window."""
        return self.window * self.window


LEVELS = (Level(64, 2, 28), Level(128, 4, 14), Level(256, 8, 7))
