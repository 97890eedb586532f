"""Property-based tests (hypothesis): any value of any option of any command, and of the API's
arguments, gives a result or a clear error (exit status 2 with one line on stderr, or the
documented exception naming the argument), never a traceback. Command lines stop where the work
would start (tests/command_utils.py's stubs); the API examples are tiny."""
from __future__ import annotations

import re

import pytest
import torch

pytest.importorskip("hypothesis")  # the [test] extra; machines without it skip this file
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from poster_fast.commands.cli import COMMANDS
from poster_fast.errors import UsageError
from command_utils import BASE, WORK, FakeClassifier, photo, place, recognizer, run, work  # noqa: F401  (fixtures)

FIXTURES = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
# Text a command line can hold: no NUL, no lone surrogates other than the ones Python's
# surrogateescape decoding of argv produces (so: none here).
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=6)
NUMBER = st.one_of(st.integers(-3, 2 ** 40).map(str), st.floats().map(str), TEXT,
                   st.sampled_from(["0", "1", "-1", "1e9", "nan", "-inf", "0x10", "1_000", " 3 ", "\u0663", "2.5"]))
PATH = st.one_of(TEXT, st.sampled_from(["", "-", ".", "..", "/", "file.txt", "file.txt/x", "folder", "folder/new/o",
                                        "photos", "photos/me.png", "c.pt", "missing/deep/x", "data", "a" * 300]))
INPUT = st.sampled_from(["photos", "photos/me.png", "missing.png", "file.txt", "folder", "c.pt"])


def choice(*values: str) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(values), TEXT)


FLAG = st.just(None)
MODEL = {"--device": choice("cpu", "cuda", "cuda:0", "cuda:7", "mps", "cpu:0"),
         "--attn-backend": choice("auto", "reference", "cpu", "triton", "cuda"), "--trusted": FLAG}
DATA = {"--data": PATH, "--classes": choice("a,b", "a,,b", "a,a", ",", "x"), "--image-size": NUMBER,
        "--workers": NUMBER, "--amp": choice("auto", "bf16", "off")}
INFERENCE = {"--precision": choice("auto", "fp32", "bf16", "fp16"), "--compile": FLAG}
OPTIONS = {
    "predict": {"--checkpoint": PATH, "--dataset": choice("rafdb", "caers"), "--classes": DATA["--classes"],
                "--no-detect": FLAG, "--margin": NUMBER, "--image-size": NUMBER, "--batch-size": NUMBER,
                "--json": st.one_of(st.none(), PATH), "--csv": st.one_of(st.none(), PATH), "--annotate": PATH,
                "--every": NUMBER, "--allow-random": FLAG, "--quiet": FLAG, **MODEL, **INFERENCE},
    "train": {"--dataset": choice("rafdb", "affectnet8"), **DATA, **MODEL, "--out": PATH, "--epochs": NUMBER,
              "--batch-size": NUMBER, "--lr": NUMBER, "--weight-decay": NUMBER, "--optimizer": choice("adam", "sgd"),
              "--rho": NUMBER, "--gamma": NUMBER, "--plain": FLAG, "--sampler": choice("auto", "balanced"),
              "--val-split": choice("valid", "../x", "a/b"), "--test-split": choice("test", ""), "--ir50": PATH,
              "--landmark": PATH, "--resume": st.one_of(st.none(), PATH), "--max-steps": NUMBER, "--seed": NUMBER},
    "evaluate": {"--checkpoint": PATH, "--dataset": choice("rafdb"), "--split": choice("valid", "a/b", ".."),
                 "--batch-size": NUMBER, "--out": PATH, **{k: v for k, v in DATA.items() if k != "--amp"},
                 **MODEL, **INFERENCE},
    "bench": {"--quick": FLAG, "--batch": NUMBER, "--model-batch": NUMBER, "--dtypes": choice("fp32", "fp32,bf16", ","),
              "--levels": choice("1", "1,3", "4"), "--backends": choice("cpu", "reference,cpu", "bogus"),
              "--sections": choice("budget", "ops,infer"), "--warmup": NUMBER, "--iters": NUMBER, "--threads": NUMBER,
              "--device": choice("cpu", "cuda"), "--time-limit": NUMBER, "--json": PATH},
    "budget": {"--num-classes": NUMBER},
    "export": {"--onnx": PATH, "--safetensors": PATH, "--pretrained": PATH, "--push-to-hub": TEXT, "--force": FLAG,
               "--dataset": choice("rafdb"), "--classes": DATA["--classes"], "--trusted": FLAG,
               "--image-size": NUMBER, "--opset": NUMBER, "--no-check": FLAG},
}


@st.composite
def command_line(draw, name: str) -> list[str]:
    """The command's base line (command_utils.BASE) with some options drawn anew."""
    chosen = draw(st.lists(st.sampled_from(sorted(OPTIONS[name])), max_size=4, unique=True))
    argv = list(BASE[name])
    if name == "predict":
        argv = ["predict", *draw(st.lists(INPUT, min_size=1, max_size=3)), *argv[2:]]
    for option in chosen:
        value = draw(OPTIONS[name][option])
        argv += [option] if value is None else [option, value]
    return argv


@pytest.mark.parametrize("name", list(COMMANDS))
def test_any_command_line_starts_the_work_or_gives_one_line_and_status_2(name, place, work, capsys):  # noqa: F811
    @FIXTURES
    @given(argv=command_line(name))
    def check(argv: list[str]) -> None:
        work.clear()
        code, err = run(argv, capsys)
        if code == 0:
            assert work and work[0] in WORK[name], (argv, err)
        else:
            assert code == 2, (argv, err)
            last = err.rstrip("\n").split("\n")[-1]
            assert last.startswith(f"poster-fast {name}: error: ") and err.endswith("\n"), (argv, err)
            assert "Traceback" not in err and not work, (argv, err)
    check()


NAMED = re.compile(r"^(q|k|v|rpb_table|window_size|scale|num_classes|attn_backend|x|image_size|margin|batch_size"
                   r"|--[a-z-]+)[: ]")
ANY = st.one_of(st.integers(-2, 9), st.floats(), st.text(max_size=3), st.booleans(), st.none(),
                st.tuples(st.integers(-1, 3), st.integers(-1, 3)))


def named_error(call) -> object:
    """call(), or the argument-naming TypeError/ValueError it raises."""
    try:
        return call()
    except (TypeError, ValueError) as err:
        assert NAMED.match(str(err)), repr(err)
        return err


@settings(max_examples=25, deadline=None, database=None)
@given(num_classes=st.one_of(ANY, st.integers(1, 3)),
       backend=st.one_of(st.sampled_from(["auto", "reference", "cpu", "bogus", ""]), ANY))
def test_model_arguments(num_classes, backend):
    from poster_fast import POSTERV2

    result = named_error(lambda: POSTERV2(num_classes=num_classes, attn_backend=backend))
    if not isinstance(result, Exception):
        assert result.num_classes == num_classes and result.attn_backend == backend


@settings(max_examples=60, deadline=None, database=None)
@given(b=st.integers(0, 2), h=st.integers(0, 2), d=st.integers(0, 3), windows=st.integers(0, 2),
       window=st.one_of(st.integers(-1, 3), st.tuples(st.integers(0, 3), st.integers(0, 3)), ANY),
       n=st.one_of(st.none(), st.integers(0, 9)), table_rows=st.one_of(st.none(), st.integers(0, 30)),
       scale=st.one_of(st.none(), st.floats(), st.sampled_from([0, -1, 0.5, "x"])),
       backend=st.sampled_from(["auto", "reference", "cpu", "bogus"]))
def test_op_arguments(b, h, d, windows, window, n, table_rows, scale, backend):
    from poster_fast import ops
    from poster_fast.ops.validate import table_rows as rows_of

    pair = window if isinstance(window, tuple) else (window, window)
    ok_pair = all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in pair)
    tokens = n if n is not None else (pair[0] * pair[1] if ok_pair else 4)
    rows = table_rows if table_rows is not None else (rows_of(pair) if ok_pair else 9)
    q = torch.randn(b, h, tokens, d)
    k, v = torch.randn(b * windows, h, tokens, d), torch.randn(b * windows, h, tokens, d)
    try:
        out = named_error(lambda: ops.window_cross_attention(q, k, v, torch.randn(rows, h), window, scale, backend))
    except RuntimeError as err:  # an explicit backend that cannot run (or does not exist) says why
        assert re.match(r"(backend='\w+' cannot run|unknown backend)", str(err)), repr(err)
        return
    if isinstance(out, torch.Tensor):
        assert out.shape == k.shape and torch.isfinite(out).all()


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(image_size=st.one_of(ANY, st.integers(1, 64)), margin=st.one_of(ANY, st.floats(0, 10)),
       batch_size=st.one_of(ANY, st.integers(1, 4)))
def test_predict_files_arguments(image_size, margin, batch_size, tmp_path):
    from poster_fast.inference.predict import predict_files

    files = [str(photo(tmp_path / "p.png", 0)), str(photo(tmp_path / "q.png", 1))]
    result = named_error(lambda: predict_files(files, recognizer(FakeClassifier(), image_size=image_size, margin=margin,
                                                                 batch_size=batch_size), progress=False))
    if isinstance(result, list):
        assert [r.classified for r in result] == [1, 1]


@settings(max_examples=60, deadline=None, database=None)
@given(field=st.sampled_from(["image_size", "workers", "epochs", "batch_size", "lr", "weight_decay", "rho", "gamma",
                              "max_steps", "seed", "amp", "optimizer", "sampler", "dataset", "classes",
                              "val_split", "test_split"]),
       value=st.one_of(ANY, st.lists(st.text(max_size=2), max_size=3), st.sampled_from(["a/b", "..", "valid"])))
def test_train_options_arguments(field, value):
    from poster_fast.training.options import TrainOptions

    opts = TrainOptions(**{"data": "data", "dataset": "rafdb", field: value})
    try:
        checked = opts.check()
    except TypeError as err:
        assert NAMED.match(str(err)), repr(err)
        return
    except UsageError as err:
        assert NAMED.match(str(err)), repr(err)
        return
    assert checked.lr is not None
