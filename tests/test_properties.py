"""Property-based tests (hypothesis): any value of any option of any command, and of the API's
arguments, gives a result or a clear error (exit status 2 with one line on stderr, or the
documented exception naming the argument), never a traceback. Command lines stop where the work
would start (tests/command_utils.py's stubs); the API examples are tiny. The paths drawn include
links (symbolic, hard, broken, to a folder), FIFOs, a socket and long names (issue 19): none is
opened to be read, no output is a file the command reads, and every file is left as it was."""
from __future__ import annotations

import os
import re
import signal
import socket
from pathlib import Path

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
LONG = "L" * 250 + ".png"  # 254 bytes: the longest names a file system takes
# What the `hostile` fixture adds to `place`: links to the inputs, special files, long names.
HOSTILE = ["link-c.pt", "hard-c.pt", "photos/link-me.png", "photos/hard-me.png", "broken.png", "link-photos",
           "pipe.jpg", "pipe.pt", "sock.png", "photos/pipe.png", "fifo-data", "hf", "hf-pipe", "link-data",
           f"photos/{LONG}", "photos/" + "M" * 255 + ".png", "photos/../c.pt", "data/valid/1/out.json"]
PATH = st.one_of(TEXT, st.sampled_from(["", "-", ".", "..", "/", "file.txt", "file.txt/x", "folder", "folder/new/o",
                                        "photos", "photos/me.png", "c.pt", "missing/deep/x", "data", "a" * 300,
                                        *HOSTILE]))
INPUT = st.sampled_from(["photos", "photos/me.png", "missing.png", "file.txt", "folder", "c.pt", "pipe.jpg",
                         "sock.png", "broken.png", "link-photos", "photos/link-me.png", f"photos/{LONG}"])
# Class names: CSV column names, repeats (after stripping), blanks, long and odd names.
CLASSES = st.one_of(st.sampled_from(["a,b", "a,,b", "a,a", "a, a", ",", "x", "score,label,file,x,y,w,h",
                                     "prob_a,a", "file,frame", "\u00e9,e\u0301", "L" * 300 + ",b"]),
                    st.lists(TEXT, min_size=1, max_size=4).map(",".join))


def choice(*values: str) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(values), TEXT)


FLAG = st.just(None)
MODEL = {"--device": choice("cpu", "cuda", "cuda:0", "cuda:7", "mps", "cpu:0"),
         "--attn-backend": choice("auto", "reference", "cpu", "triton", "cuda"), "--trusted": FLAG}
DATA = {"--data": PATH, "--classes": CLASSES, "--image-size": NUMBER,
        "--workers": NUMBER, "--amp": choice("auto", "bf16", "off")}
INFERENCE = {"--precision": choice("auto", "fp32", "bf16", "fp16"), "--compile": FLAG}
OPTIONS = {
    "predict": {"--checkpoint": PATH, "--dataset": choice("rafdb", "caers"), "--classes": DATA["--classes"],
                "--no-detect": FLAG, "--margin": NUMBER, "--image-size": NUMBER, "--batch-size": NUMBER,
                "--json": st.one_of(st.none(), PATH), "--csv": st.one_of(st.none(), PATH), "--annotate": PATH,
                "--every": NUMBER, "--allow-random": FLAG, "--quiet": FLAG, "--force": FLAG, **MODEL, **INFERENCE},
    "train": {"--dataset": choice("rafdb", "affectnet8"), **DATA, **MODEL, "--out": PATH, "--epochs": NUMBER,
              "--batch-size": NUMBER, "--lr": NUMBER, "--weight-decay": NUMBER, "--optimizer": choice("adam", "sgd"),
              "--rho": NUMBER, "--gamma": NUMBER, "--plain": FLAG, "--sampler": choice("auto", "balanced"),
              "--val-split": choice("valid", "../x", "a/b"), "--test-split": choice("test", ""), "--ir50": PATH,
              "--landmark": PATH, "--resume": st.one_of(st.none(), PATH), "--max-steps": NUMBER, "--seed": NUMBER,
              "--force": FLAG},
    "evaluate": {"--checkpoint": PATH, "--dataset": choice("rafdb"), "--split": choice("valid", "a/b", ".."),
                 "--batch-size": NUMBER, "--out": PATH, **{k: v for k, v in DATA.items() if k != "--amp"},
                 "--force": FLAG, **MODEL, **INFERENCE},
    "bench": {"--quick": FLAG, "--batch": NUMBER, "--model-batch": NUMBER, "--dtypes": choice("fp32", "fp32,bf16", ","),
              "--levels": choice("1", "1,3", "4"), "--backends": choice("cpu", "reference,cpu", "bogus"),
              "--sections": choice("budget", "ops,infer"), "--warmup": NUMBER, "--iters": NUMBER, "--threads": NUMBER,
              "--device": choice("cpu", "cuda"), "--time-limit": NUMBER, "--json": PATH, "--force": FLAG},
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
    if name == "export":
        argv[1] = draw(st.sampled_from(["c.pt", "link-c.pt", "hard-c.pt", "hf", "hf-pipe", "pipe.pt"]))
    for option in chosen:
        value = draw(OPTIONS[name][option])
        argv += [option] if value is None else [option, value]
    return argv


@pytest.fixture
def hostile(place):  # noqa: F811
    """`place` with links to its inputs, special files where files are read, and long names."""
    os.symlink("c.pt", place / "link-c.pt")
    os.link(place / "c.pt", place / "hard-c.pt")
    os.symlink("me.png", place / "photos" / "link-me.png")
    os.link(place / "photos" / "me.png", place / "photos" / "hard-me.png")
    os.symlink("nowhere.png", place / "broken.png")
    os.symlink("photos", place / "link-photos")
    os.symlink("data", place / "link-data")
    for fifo in ("pipe.jpg", "pipe.pt", "photos/pipe.png", "fifo-data/valid/1/p.png", "hf-pipe/config.json"):
        (place / fifo).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(place / fifo)
    (place / "fifo-data" / "train").mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(place / "sock.png"))
    (place / "hf").mkdir()
    (place / "hf" / "config.json").write_text('{"architecture": "POSTERV2"}')
    (place / "hf" / "model.safetensors").write_bytes(b"weights")
    photo(place / "photos" / LONG, 0)
    return place


def snapshot(folder: Path) -> dict[str, object]:
    """Every entry under `folder`: a file's bytes, a link's target, a special file's type."""
    out: dict[str, object] = {}
    for path in folder.rglob("*"):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            out[key] = ("link", os.readlink(path))
        elif path.is_fifo() or path.is_socket():
            out[key] = ("special", path.stat().st_mode)
        elif path.is_file():
            out[key] = path.read_bytes()
    return out


def values(argv: list[str], *options: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in options]


def reads_and_writes(argv: list[str]) -> tuple[list[str], list[str]]:
    """The files a command line reads (the checkpoint, predict's photos, train's backbones) and
    the files it names to write."""
    name = argv[0]
    reads = values(argv, "--checkpoint", "--ir50", "--landmark")
    if name == "export":
        reads.append(argv[1])
    if name == "predict":
        taking = {"--checkpoint", "--dataset", "--classes", "--margin", "--image-size", "--batch-size", "--json",
                  "--csv", "--annotate", "--every", *MODEL, *INFERENCE}
        reads += [a for i, a in enumerate(argv[1:], 1) if not a.startswith("-") and argv[i - 1] not in taking]
    writes = values(argv, "--json", "--csv", "--onnx", "--safetensors")
    return reads, [w for w in writes if w != "-"]


def special(path: str) -> bool:
    """A FIFO or socket, or a save_pretrained folder whose config.json is one."""
    try:
        p = Path(path) / "config.json" if Path(path).is_dir() else Path(path)
        return p.is_fifo() or p.is_socket()
    except OSError:
        return False


def same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b) and Path(a).is_file()
    except OSError:
        return False


@pytest.mark.parametrize("name", list(COMMANDS))
def test_any_command_line_starts_the_work_or_gives_one_line_and_status_2(name, hostile, work, capsys):  # noqa: F811
    def expire(*_):
        raise TimeoutError("still running after 60 s: a special file was opened to be read")

    @FIXTURES
    @given(argv=command_line(name))
    def check(argv: list[str]) -> None:
        work.clear()
        before = snapshot(hostile)
        previous = signal.signal(signal.SIGALRM, expire)
        signal.alarm(60)
        try:
            code, err = run(argv, capsys)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        if code == 0:
            assert work and work[0] in WORK[name], (argv, err)
        else:
            assert code == 2, (argv, err)
            last = err.rstrip("\n").split("\n")[-1]
            assert last.startswith(f"poster-fast {name}: error: ") and err.endswith("\n"), (argv, err)
            assert "Traceback" not in err and not work, (argv, err)
        reads, writes = reads_and_writes(argv)
        if any(special(r) for r in values(argv, "--checkpoint", "--ir50", "--landmark", "--resume") +
               argv[1:2] * (name == "export")):
            assert code == 2, (argv, err)  # a model or backbone file that is a FIFO is refused, never opened
        if any(same(w, r) for w in writes for r in reads):
            assert code == 2, (argv, err)  # (another option may be refused first: the message may differ)
        after = snapshot(hostile)
        assert {k: after.get(k) for k in before} == before, argv  # nothing read or overwritten is changed
    check()


# Names of one file: the file, a symbolic link, a hard link, a path through '..' or a folder link.
ALIASES = {"c.pt": ["c.pt", "./c.pt", "link-c.pt", "hard-c.pt", "photos/../c.pt", "link-photos/../c.pt"],
           "photos/me.png": ["photos/me.png", "photos/link-me.png", "photos/hard-me.png", "link-photos/me.png",
                             "photos/./me.png"]}


@st.composite
def writes_over_an_input(draw) -> list[str]:
    """A command line whose output is a file it reads, by any of its names, --force or not."""
    ckpt, out = draw(st.sampled_from(ALIASES["c.pt"])), draw(st.sampled_from(ALIASES["c.pt"]))
    photo_out = draw(st.sampled_from(ALIASES["photos/me.png"]))
    argv = draw(st.sampled_from([
        ["predict", "photos", "--checkpoint", ckpt, "--json", out],
        ["predict", "photos", "--checkpoint", ckpt, "--csv", out, "--json", "-"],
        ["predict", "photos/me.png", "--checkpoint", ckpt, "--csv", photo_out],
        ["export", ckpt, "--safetensors", out],
        ["export", ckpt, "--onnx", out],
        ["train", "--data", "data", "--dataset", "rafdb", "--out", ".", "--ir50", "best.pt"],
    ]))
    if argv[0] == "train":  # the run's best.pt is the backbone file it reads
        argv[-1] = draw(st.sampled_from(["best.pt", "link-best.pt", "hard-best.pt"]))
    return argv + draw(st.sampled_from([[], ["--force"]]))


def test_no_output_is_an_input_by_any_name(hostile, work, capsys):  # noqa: F811
    (hostile / "best.pt").write_bytes(b"a backbone")
    os.symlink("best.pt", hostile / "link-best.pt")
    os.link(hostile / "best.pt", hostile / "hard-best.pt")

    @FIXTURES
    @given(argv=writes_over_an_input())
    def check(argv: list[str]) -> None:
        work.clear()
        before = snapshot(hostile)
        code, err = run(argv, capsys)
        assert code == 2 and not work, (argv, err)
        assert "is one of the input files" in err and "not even with --force" in err, (argv, err)
        assert snapshot(hostile) == before, argv
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
        assert out.shape == k.shape
        # a finite scale is accepted; only one so large that scale * q.k overflows float32 gives
        # non-finite scores (the formula's own, the reference's too)
        if not isinstance(scale, float) or abs(scale) <= 1e30:
            assert torch.isfinite(out).all()


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


NAMES = st.lists(st.one_of(TEXT, st.sampled_from(["file", "score", "label", "x", "prob_x", "error", "precision", " "])),
                 min_size=1, max_size=5)


@settings(max_examples=80, deadline=None, database=None)
@given(names=NAMES)
def test_class_names_are_distinct_names_and_never_take_a_csv_column(names):
    """Any class names: refused (TypeError/ValueError naming the argument) unless distinct and
    non-empty once stripped; accepted ones get one CSV column each, none of predict's own."""
    import csv
    import io

    from poster_fast.checks import check_names
    from poster_fast.faces import Box
    from poster_fast.inference.crops import Face, PhotoResult
    from poster_fast.inference.outputs import CSV_COLUMNS, csv_document, probability_columns

    stripped = [n.strip() for n in names]
    try:
        classes = check_names("classes", names)
    except (TypeError, ValueError) as err:
        assert NAMED.match(str(err)) or str(err).startswith("classes: "), repr(err)
        assert not all(stripped) or len(set(stripped)) < len(stripped)
        return
    assert classes == stripped and all(classes) and len(set(classes)) == len(classes)
    columns = probability_columns(classes)
    assert len(set(columns)) == len(columns) and not set(columns) & set(CSV_COLUMNS)
    probs = {c: (i + 1) / 100 for i, c in enumerate(classes)}
    face = Face(Box(1, 2, 3, 4), label=classes[0], score=0.5, probs=probs)
    text = csv_document([PhotoResult("p.png", faces=[face])], classes)
    row = next(csv.DictReader(io.StringIO(text, newline="")))  # (str.splitlines would split at \x85 too)
    assert (row["file"], row["label"], row["score"], row["x"]) == ("p.png", classes[0], "0.5", "1")
    assert [float(row[c]) for c in columns] == list(probs.values())


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.one_of(NAMES, st.lists(st.integers(), max_size=2), st.none()),
       num_classes=st.one_of(st.none(), st.integers(0, 9)))
def test_recorded_class_names_are_checked(names, num_classes, tmp_path):
    """What a checkpoint records of its classes is accepted only when a model can have it."""
    from poster_fast.checkpoint import MODEL_META, check_entries
    from poster_fast.checks import NUM_CLASSES, check_names
    from poster_fast.errors import CheckpointError

    meta = {k: v for k, v in (("classes", names), ("num_classes", num_classes)) if v is not None}
    try:
        check_entries(meta, tmp_path / "m.pt", MODEL_META)
    except CheckpointError as err:
        assert str(err).startswith(f"{tmp_path / 'm.pt'}: entry "), repr(err)
        return
    if names is not None:
        assert check_names("classes", names) and (num_classes is None or len(names) == num_classes)
    if num_classes is not None:
        assert NUM_CLASSES.contains(num_classes)
