"""`poster-fast` / `python -m poster_fast`: the parser and the table of commands.

A command is a module `poster_fast.commands.<name>` with `add_arguments(parser)` and
`run(args) -> int` (the exit status). At module level it imports only the standard library
and light poster_fast modules (no torch, numpy, PIL, ...): `poster-fast --help` imports no
command module, and `poster-fast NAME ...` imports only NAME's. Every command runs through
`run_command`, and every mistake is answered with one line on stderr (`Parser.error` for the
command line itself); EXIT_STATUS lists what each exit status means.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from types import ModuleType
from typing import NoReturn, Sequence

from ..version import __version__
from ..errors import CheckpointError, DataError, RunError, Stopped, UsageError

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
USAGE_EXIT, FAILED_EXIT, REQUEUE_EXIT, INTERRUPTED_EXIT = 2, 3, 75, 130  # 75: sysexits' EX_TEMPFAIL
# status -> (meaning, the commands that use it)
EXIT_STATUS: dict[int, tuple[str, tuple[str, ...]]] = {
    0: ("done", tuple(COMMANDS)),
    1: ("no face was classified (every input had an error)", ("predict",)),
    USAGE_EXIT: ("a usage, data or checkpoint error: one line on stderr says what to fix\n"
                 "       (checked before the work starts)", tuple(COMMANDS)),
    FAILED_EXIT: ("stopped part-way, said in one line: a non-finite training loss, an output that\n"
                  "       could not be written (the others were), or an ONNX file that failed its\n"
                  "       onnxruntime check (not written)", ("predict", "train", "evaluate", "bench", "export")),
    REQUEUE_EXIT: ("stopped on SIGTERM at a step boundary after saving OUT/last.pt: run the same\n"
                   "       command again (--resume auto) to continue", ("train",)),
    INTERRUPTED_EXIT: ("interrupted (Ctrl-C, SIGINT)", tuple(COMMANDS)),
}


def exit_status_text(command: str | None = None) -> str:
    """The exit statuses of `command` (all of them for None), for --help epilogs and docs/design.md."""
    rows = [(code, text) for code, (text, users) in EXIT_STATUS.items() if command is None or command in users]
    return "exit status:\n" + "\n".join(f"  {code:>3}  {text}" for code, text in rows)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions and epilogs as written; every option's default appended to its help, unless
    it has none (None, False) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text.lower() \
                or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


def one_line(text: str) -> str:
    """`text` with line breaks and other unprintable characters escaped (a user's value may
    hold them), so that an error is one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: what is wrong, and where the help is."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_EXIT, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every command listed; only `command`'s module is imported, for its options."""
    parser = Parser(prog="poster-fast", description=DESCRIPTION, formatter_class=HelpFormatter,
                    epilog=exit_status_text())
    parser.add_argument("--version", action="version", version=f"poster-fast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (path, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter,
                           epilog=exit_status_text(name))
        if name == command:
            importlib.import_module(path).add_arguments(p)
    parser.set_defaults(subparsers=sub.choices)
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line parsed; words no option takes are refused by the command's parser, so
    that the error names the command."""
    args, extra = build_parser(next((a for a in argv if not a.startswith("-")), None)).parse_known_args(argv)
    if extra:
        args.subparsers[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    del args.subparsers
    return args


def check_environment() -> None:
    """The environment variables poster_fast reads, before any work: POSTER_FAST_CPU_ISA names
    a build of the CPU kernels that this CPU runs (the kernels would refuse it on their first
    call, after the model has loaded)."""
    if not os.environ.get("POSTER_FAST_CPU_ISA"):
        return
    from ..ops.extension import check_cpu_isa_environment

    check_cpu_isa_environment()


def run_command(name: str, module: ModuleType, args: argparse.Namespace) -> int:
    """module.run(args); every error a user can act on prints one line and returns its status."""
    try:
        check_environment()
        return int(module.run(args))
    except USER_ERRORS as err:
        print(f"poster-fast {name}: error: {one_line(str(err))}", file=sys.stderr)
        return USAGE_EXIT
    except Stopped as err:
        print(f"poster-fast {name}: {one_line(str(err))}", file=sys.stderr)
        return REQUEUE_EXIT
    except RunError as err:
        print(f"poster-fast {name}: error: {one_line(str(err))}", file=sys.stderr)
        return FAILED_EXIT
    except KeyboardInterrupt:
        print(f"poster-fast {name}: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT


def main(argv: Sequence[str] | None = None) -> int:
    # No top-level option takes a value, so the first word that is not an option is the command.
    args = parse(list(sys.argv[1:] if argv is None else argv))
    return run_command(args.command, importlib.import_module(COMMANDS[args.command][0]), args)
