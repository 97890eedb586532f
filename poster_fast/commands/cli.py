"""`poster-fast` / `python -m poster_fast`: one entry point, one module per sub-command.

Each command module exposes `register(subparsers)` and keeps its heavy imports inside the
function it runs, so `poster-fast --help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = ("budget", "bench", "predict", "train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="poster-fast", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"poster_fast.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
