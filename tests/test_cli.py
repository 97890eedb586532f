"""The command line: the table of commands, what `--help` and each command's module import,
the public names of `import poster_fast`, and the one error wrapper."""
from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import types

import pytest

from poster_fast.commands import cli
from poster_fast.errors import CheckpointError, DataError, RunError, UsageError

HEAVY = ("torch", "numpy", "PIL", "cv2", "matplotlib", "tqdm", "triton", "skimage")


def imported_after(code: str) -> set[str]:
    """The heavy top-level packages a fresh interpreter has imported after running `code`."""
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.splitlines()[-1])) & set(HEAVY)


def help_of(argv: list[str]) -> str:
    return f"from poster_fast.commands.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass"


def test_help_lists_every_command_and_imports_nothing_heavy():
    out = subprocess.run([sys.executable, "-m", "poster_fast", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for name, (_, help_text) in cli.COMMANDS.items():
        assert name in out.stdout and help_text.split()[0] in out.stdout
    assert imported_after(help_of(["--help"])) == set()


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_command_modules_import_nothing_heavy(name):
    module = cli.COMMANDS[name][0]
    assert imported_after(f"import {module}") == set()
    loaded = importlib.import_module(module)
    assert callable(loaded.add_arguments) and callable(loaded.run)


@pytest.mark.parametrize("name", ["predict", "train", "evaluate", "budget"])
def test_command_help_imports_nothing_heavy(name):
    assert imported_after(help_of([name, "--help"])) == set()


def test_import_poster_fast_is_light_and_keeps_its_public_names():
    assert imported_after("import poster_fast") == set()
    names = "POSTERV2, optimize, load_checkpoint, load_backbones, CheckpointError, LoadReport, ops"
    extra = imported_after(f"from poster_fast import {names}") - imported_after("import torch")
    assert not extra & {"PIL", "cv2", "matplotlib", "tqdm", "skimage"}  # (torch.hub imports tqdm)
    # The submodule poster_fast.optimize does not hide the function of the same name.
    code = "import poster_fast.optimize, poster_fast\nassert callable(poster_fast.optimize)"
    assert imported_after(code) == set()


@pytest.mark.parametrize("error", [UsageError("--batch-size: bad"), DataError("no folder"),
                                   CheckpointError("not a checkpoint")])
def test_user_errors_give_one_line_and_status_2(error, capsys):
    def run(args):
        raise error
    assert cli.run_command("demo", types.SimpleNamespace(run=run), argparse.Namespace()) == 2
    assert capsys.readouterr().err == f"poster-fast demo: error: {error}\n"


def test_other_errors_propagate():
    def run(args):
        raise RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="a bug"):
        cli.run_command("demo", types.SimpleNamespace(run=run), argparse.Namespace())


# (`predict` alone: its INPUTs are optional beside --camera; tests/test_live.py checks its one line.)
@pytest.mark.parametrize("argv", [[], ["nope"], ["--nope", "predict"], ["budget", "--num-classes", "9"]])
def test_usage_mistakes_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and err.startswith("poster-fast")
    assert "error:" in err and "--help)" in err


@pytest.mark.parametrize("error, status", [(RunError("an output could not be written"), 3),
                                           (KeyboardInterrupt(), 130)])
def test_run_errors_and_interrupts_have_their_own_status(error, status, capsys):
    def run(args):
        raise error
    assert cli.run_command("demo", types.SimpleNamespace(run=run), argparse.Namespace()) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("poster-fast demo: ")


def test_version(capsys):
    from poster_fast import __version__

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out == f"poster-fast {__version__}\n"


def command_parser(name: str) -> argparse.ArgumentParser:
    parser = cli.build_parser(name)
    return next(a for a in parser._subparsers._group_actions if a.dest == "command").choices[name]


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_option_has_help_and_its_default_and_the_epilog_lists_exit_statuses(name):
    parser = command_parser(name)
    text = parser.format_help()
    for action in parser._actions:
        assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest}: no help"
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            assert f"{action.default}" in text, (name, action.dest)
    assert "exit status:" in text
    for status, (_, users) in cli.EXIT_STATUS.items():
        assert (f"\n  {status:>3}  " in text) == (name in users), (name, status)


def test_attn_backend_choices_are_the_registered_backends():
    from poster_fast import ops

    parser = command_parser("predict")
    choices = next(a.choices for a in parser._actions if a.dest == "attn_backend")
    assert tuple(choices) == ("auto", *ops.registered())
