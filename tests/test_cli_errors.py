"""Every command answers a mistake in its options with one line on stderr and exit status 2,
before any work starts (the entry points of the work are replaced by ones that record the call)."""
from __future__ import annotations

import pytest
import torch

from command_utils import BASE, WORK, place, run, work  # noqa: F401  (fixtures)

NO_CUDA = not torch.cuda.is_available()
CASES = [
    # predict
    ("predict", ["--batch-size", "0"], "--batch-size: expected an integer >= 1, got '0'"),
    ("predict", ["--batch-size", "-1"], "--batch-size: expected an integer >= 1, got '-1'"),
    ("predict", ["--image-size", "0"], "--image-size: expected an integer from 1 to 1024, got '0'"),
    ("predict", ["--margin", "-1"], "--margin: expected a finite number from 0 to 10, got '-1'"),
    ("predict", ["--margin", "nan"], "--margin: expected a finite number"),
    ("predict", ["--attn-backend", "bogus"], "--attn-backend: invalid choice: 'bogus'"),
    ("predict", ["--device", "tpu"], "--device tpu: expected cpu, cuda or cuda:N"),
    ("predict", ["--classes", "a,,b"], "--classes: expected comma-separated, distinct, non-empty"),
    ("predict", ["--classes", "a,a"], "--classes: expected comma-separated, distinct"),
    ("predict", ["--annotate", "file.txt"], "--annotate file.txt: is a file; expected a folder"),
    ("predict", ["--annotate", "file.txt/sub"], "is under file.txt, which is a file"),
    ("predict", ["--json", "folder"], "--json folder: is a folder; expected a file name"),
    ("predict", ["--csv", "file.txt/x.csv"], "--csv file.txt: is a file; expected a folder"),
    ("predict", ["--json", "photos/me.png"], "--json photos/me.png: is one of the input files"),
    ("predict", ["--json", "-", "--csv", "-"], "--json and --csv cannot both write to stdout"),
    ("predict", ["--json", "o.txt", "--csv", "o.txt"], "--json and --csv name the same file"),
    ("predict", ["--checkpoint", "nope.pt"], "--checkpoint nope.pt: does not exist"),
    ("predict", ["--checkpoint", "folder"], "--checkpoint folder: is a folder without config.json; expected a checkpoint file"),
    # train
    ("train", ["--epochs", "0"], "--epochs: expected an integer >= 1, got '0'"),
    ("train", ["--batch-size", "0"], "--batch-size: expected an integer >= 1"),
    ("train", ["--lr", "0"], "--lr: expected a finite number > 0, got '0'"),
    ("train", ["--lr", "inf"], "--lr: expected a finite number > 0"),
    ("train", ["--gamma", "1.5"], "--gamma: expected a finite number > 0 and <= 1"),
    ("train", ["--weight-decay", "-1"], "--weight-decay: expected a finite number >= 0"),
    ("train", ["--workers", "-1"], "--workers: expected an integer from 0 to 256"),
    ("train", ["--max-steps", "0"], "--max-steps: expected an integer >= 1"),
    ("train", ["--seed", "-1"], "--seed: expected an integer from 0 to 4294967295"),
    ("train", ["--image-size", "2.5"], "--image-size: expected an integer from 1 to 1024"),
    ("train", ["--out", "file.txt"], "--out file.txt: is a file; expected a folder"),
    ("train", ["--out", "file.txt/run"], "is under file.txt, which is a file"),
    ("train", ["--data", "nope"], "--data nope: does not exist"),
    ("train", ["--data", "file.txt"], "--data file.txt: is a file; expected a folder"),
    ("train", ["--ir50", "nope.pth"], "--ir50 nope.pth: does not exist"),
    ("train", ["--resume", "folder"], "--resume folder: is a folder; expected a file"),
    ("train", ["--val-split", "../x"], "--val-split '../x': expected the name of a folder"),
    ("train", ["--optimizer", "sgd"], "--optimizer: invalid choice: 'sgd'"),
    # evaluate
    ("evaluate", ["--out", "file.txt"], "--out file.txt: is a file; expected a folder"),
    ("evaluate", ["--batch-size", "0"], "--batch-size: expected an integer >= 1"),
    ("evaluate", ["--split", "a/b"], "--split 'a/b': expected the name of a folder"),
    ("evaluate", ["--checkpoint", "folder"], "--checkpoint folder: is a folder"),
    ("evaluate", ["--data", "nope"], "--data nope: does not exist"),
    # bench
    ("bench", ["--json", "folder"], "--json folder: is a folder; expected a file name"),
    ("bench", ["--json", "file.txt/b.json"], "--json file.txt: is a file"),
    ("bench", ["--batch", "0"], "--batch: expected an integer >= 1"),
    ("bench", ["--time-limit", "nan"], "--time-limit: expected seconds >= 1"),
    ("bench", ["--backends", "bogus"], "--backends: unknown backend 'bogus'"),
    # budget
    ("budget", ["--num-classes", "9"], "--num-classes: invalid choice: 9"),
]
if NO_CUDA:
    CASES += [(name, ["--device", "cuda"], "no CUDA GPU is visible") for name in ("predict", "train", "evaluate")]
    CASES += [("bench", ["--device", "cuda"], "--device cuda: no CUDA GPU is visible"),
              ("predict", ["--attn-backend", "cuda"], "--attn-backend cuda cannot run on cpu")]


@pytest.mark.parametrize("name, extra, message", CASES, ids=[f"{c[0]} {' '.join(c[1])}" for c in CASES])
def test_bad_option_one_line_exit_2_no_work(name, extra, message, place, work, capsys):
    code, err = run(BASE[name] + extra, capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith(f"poster-fast {name}: error: "), err
    assert message in err
    assert work == [] and "Traceback" not in err


@pytest.mark.parametrize("name", list(BASE))
def test_valid_options_reach_the_work(name, place, work, capsys):
    """The counterpart: the same command lines without the mistake start the work."""
    code, err = run(BASE[name], capsys)
    assert code == 0, err
    assert work and work[0] in WORK[name]
