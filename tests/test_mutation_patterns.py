"""Every mutation of `make mutation-check` still applies to the tree as it is: a file moved or a
line rewritten would otherwise turn a mutation into an error found only by the slow run."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "mutation"))
import run as mutation_run  # noqa: E402


def test_every_mutation_pattern_occurs_once() -> None:
    assert mutation_run.MUTATIONS
    assert mutation_run.check_patterns(mutation_run.MUTATIONS) == []
