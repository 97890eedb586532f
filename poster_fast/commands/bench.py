"""`poster-fast bench`: an adapter over poster_fast/bench.py, which defines the options and runs
the benchmark (its module imports torch, so it loads only when the bench command is chosen)."""
from __future__ import annotations

import argparse
from typing import Any


class _Into:
    """Stands in for the subparsers object bench.register expects: gives it `parser`."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        self.parser.description = kwargs.get("description", self.parser.description)
        return self.parser


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .. import bench

    bench.register(_Into(p))


def run(args: argparse.Namespace) -> int:
    return int(args.func(args))
