"""`poster-fast` / `python -m poster_fast`: the parser and the table of commands.

A command is a module `poster_fast.commands.<name>` with `add_arguments(parser)` and
`run(args) -> int` (the exit status). At module level it imports only the standard library
and light poster_fast modules (no torch, numpy, PIL, ...): `poster-fast --help` imports no
command module, and `poster-fast NAME ...` imports only NAME's. Every command runs through
`run_command`: a usage, data or checkpoint error becomes one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType
from typing import Sequence

from .. import __version__
from ..errors import CheckpointError, DataError, UsageError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "predict": ("poster_fast.commands.predict", "classify facial expressions in photos"),
    "train": ("poster_fast.commands.train",
              "train POSTER V2 on RAF-DB, AffectNet or CAER-S (torchrun for several GPUs)"),
    "evaluate": ("poster_fast.commands.evaluate", "top-1, mean class accuracy and confusion matrix"),
    "bench": ("poster_fast.commands.bench", "time the W-MCSA backends and the model against the reference"),
    "budget": ("poster_fast.commands.budget", "parameter and FLOP counts (fvcore and thop conventions)"),
    "export": ("poster_fast.commands.export", "write a trained model as ONNX, safetensors or a Hugging Face folder"),
}
DESCRIPTION = "POSTER V2 facial expression recognition with fused W-MCSA kernels."
USER_ERRORS = (UsageError, DataError, CheckpointError)
USAGE_EXIT = 2


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command listed; only `command`'s module is imported, for its options."""
    parser = argparse.ArgumentParser(prog="poster-fast", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"poster-fast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (path, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(path).add_arguments(p)
    return parser


def run_command(name: str, module: ModuleType, args: argparse.Namespace) -> int:
    """module.run(args); the errors a user can fix print one line and return USAGE_EXIT."""
    try:
        return int(module.run(args))
    except USER_ERRORS as err:
        print(f"poster-fast {name}: error: {err}", file=sys.stderr)
        return USAGE_EXIT


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # No top-level option takes a value, so the first word that is not an option is the command.
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    return run_command(args.command, importlib.import_module(COMMANDS[args.command][0]), args)
