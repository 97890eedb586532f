"""Kept for `from poster_fast.cli import main` (tests/test_bench.py); the command line lives in
poster_fast/commands/cli.py."""
from .commands.cli import main

__all__ = ["main"]
