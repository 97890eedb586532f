"""Nothing a user owns is destroyed, nothing hangs, every failure is one line (issue 19): the
tests of each class of defect, each through the one rule that makes the class impossible.

A inputs are never outputs (files.Reads)            E sizes bounded by the memory (checks.check_fits)
B existing outputs need --force (files.check_output_*)  F the one writer: OSError -> status 3 (files.write_file)
C the training run folder and its lock (training.rundir)  G headers checked against the model
D special files are never opened to be read (files.open_regular)  H class names  I messages
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from command_utils import BASE, FakeClassifier, photo, place, recognizer, run, work  # noqa: F401  (fixtures)
from poster_fast.commands.cli import main
from poster_fast.errors import CheckpointError, DataError, UsageError
from poster_fast.files import Reads, SpecialFileError, open_regular


@contextmanager
def deadline(seconds: int = 60):
    """Fails the test instead of letting it hang (a FIFO opened to be read waits forever)."""
    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s: something waits for ever")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def one_line_error(err: str, command: str) -> None:
    assert err.count("\n") == 1 and err.startswith(f"poster-fast {command}: error: ") and "Traceback" not in err, err


def links_to(target: Path, kind: str) -> Path:
    """`target` itself, a symbolic link to it, a hard link to it, or a path through '..'."""
    if kind == "same":
        return target
    if kind == "relative":
        return target.parent / "photos" / ".." / target.name
    link = target.with_name(f"{kind}-{target.name}")
    (os.symlink if kind == "symlink" else os.link)(target, link)
    return link


@pytest.fixture(scope="module")
def model2():
    from poster_fast.model import POSTERV2

    torch.manual_seed(0)
    return POSTERV2(2).eval()


@pytest.fixture(scope="module")
def saved(model2, tmp_path_factory):
    """A best.pt and a .safetensors file of a 2-class model named a, b."""
    from poster_fast.checkpoint import save_model
    from poster_fast.hub import save_safetensors

    folder = tmp_path_factory.mktemp("saved")
    save_model(folder / "best.pt", model2, dataset="rafdb", classes=["a", "b"], epoch=1, best_acc=0.5)
    save_safetensors(folder / "m.safetensors", model2, classes=["a", "b"])
    return folder / "best.pt", folder / "m.safetensors"


# ----------------------------------------------------------------------------- A: inputs are never outputs

@pytest.mark.parametrize("kind", ["same", "symlink", "hardlink", "relative"])
def test_no_command_writes_over_a_file_it_reads(kind, place, work, capsys):
    """The checkpoint, a photo, a backbone file, by any name (links, '..'), even with --force."""
    ckpt = links_to(place / "c.pt", kind)
    me = links_to(place / "photos" / "me.png", kind) if kind != "relative" else place / "photos" / "me.png"
    (place / "hf").mkdir()
    (place / "hf" / "config.json").write_text("{}")
    (place / "hf" / "model.safetensors").write_bytes(b"weights")
    (place / "run").mkdir()
    (place / "run" / "best.pt").write_bytes(b"an earlier run's model")
    before = {p: p.read_bytes() for p in place.rglob("*") if p.is_file()}
    cases = [
        ["predict", "photos", "--checkpoint", "c.pt", "--json", str(ckpt), "--force"],
        ["predict", "photos", "--checkpoint", "c.pt", "--csv", str(ckpt)],
        ["predict", "photos", "--checkpoint", "c.pt", "--json", str(me), "--force"],
        ["export", "c.pt", "--safetensors", str(ckpt), "--force"],
        ["export", "hf", "--pretrained", "hf", "--force"],
        ["train", "--data", "data", "--dataset", "rafdb", "--out", "run", "--ir50", "run/best.pt", "--force"],
    ]
    for argv in cases:
        code, err = run(argv, capsys)
        assert code == 2, (argv, err)
        one_line_error(err, argv[0])
        assert "is one of the input files" in err and "not even with --force" in err, err
        assert not work
    assert {p: p.read_bytes() for p in before} == before


def test_evaluate_writes_nothing_over_its_checkpoint(place, work, capsys):
    (place / "eval").mkdir()
    os.link(place / "c.pt", place / "eval" / "eval_valid.json")
    code, err = run([*BASE["evaluate"], "--out", "eval", "--force"], capsys)
    assert code == 2 and "eval_valid.json: is one of the input files" in err and not work
    assert (place / "c.pt").read_bytes() == b"pt"


def test_reads_identifies_a_file_by_any_name(tmp_path):
    a = tmp_path / "a"
    a.write_text("x")
    reads = Reads([a])
    for kind in ("symlink", "hardlink"):
        assert reads.input_named(links_to(a, kind)) == a
    assert reads.input_named(tmp_path / "." / "a") == a
    assert reads.input_named(tmp_path / "b") is None


# ----------------------------------------------------------------------------- B: existing outputs need --force

@pytest.mark.parametrize("argv, existing", [
    (["predict", "photos", "--checkpoint", "c.pt", "--json", "out.json"], "out.json"),
    (["predict", "photos", "--checkpoint", "c.pt", "--csv", "out.json"], "out.json"),
    (["evaluate", "--data", "data", "--checkpoint", "c.pt", "--out", "ev"], "ev/eval_valid.json"),
    (["evaluate", "--data", "data", "--checkpoint", "c.pt", "--out", "ev"], "ev/confusion_valid.png"),
    (["bench", "--quick", "--json", "out.json"], "out.json"),
])
def test_an_existing_output_is_refused_unless_force(argv, existing, place, work, capsys):
    (place / existing).parent.mkdir(exist_ok=True)
    (place / existing).write_text("the user's")
    code, err = run(argv, capsys)
    assert code == 2 and not work
    one_line_error(err, argv[0])
    assert f"{Path(existing).name}: exists; it is not overwritten without --force" in err
    assert (place / existing).read_text() == "the user's"
    code, err = run([*argv, "--force"], capsys)
    assert code == 0 and work, err


def test_special_files_are_not_outputs(place, work, capsys):
    os.mkfifo(place / "pipe.json")
    code, err = run(["predict", "photos", "--checkpoint", "c.pt", "--json", "pipe.json", "--force"], capsys)
    assert code == 2 and "pipe.json: is a named pipe (FIFO); expected a regular file to write" in err


def test_annotated_photos_keep_existing_files_unless_force(tmp_path):
    from poster_fast.inference.outputs import Annotator

    folder = tmp_path / "ann"
    folder.mkdir()
    (folder / "a.png").write_text("the user's")
    assert Annotator(folder).name_for("in/a.jpg").name == "a_1.png"
    assert Annotator(folder, force=True).name_for("in/a.jpg").name == "a.png"
    reserved = Reads([folder / "a.png"])  # an input stays out of reach, even with force
    assert Annotator(folder, reserved, force=True).name_for("in/a.jpg").name == "a_1.png"


def test_outputs_are_checked_before_work_where_no_file_can_be_written(place, work, capsys):
    """/proc takes no new file, even as root (os.access says it would): a probe file tells."""
    for argv in (["bench", "--quick", "--json", "/proc/poster-fast-test/b.json"],
                 ["bench", "--quick", "--json", "/proc/b.json"],
                 ["predict", "photos", "--checkpoint", "c.pt", "--csv", "/proc/p.csv"],
                 ["export", "c.pt", "--safetensors", "/proc/m.safetensors"]):
        code, err = run(argv, capsys)
        assert code == 2 and not work, (argv, err)
        one_line_error(err, argv[0])
        assert "/proc" in err


# ----------------------------------------------------------------------------- C: the run folder

def test_train_refuses_a_folder_that_holds_a_run_unless_it_continues_it(place, work, capsys):
    out = place / "runs" / "rafdb"
    out.mkdir(parents=True)
    for name in ("best.pt", "last.pt", "metrics.csv"):
        (out / name).write_text(name)
    (place / "other").mkdir()
    (place / "other" / "last.pt").write_text("another run's")
    base = ["train", "--data", "data", "--dataset", "rafdb"]
    code, err = run(base, capsys)  # the default --out runs/rafdb
    assert code == 2 and not work
    one_line_error(err, "train")
    assert "runs/rafdb already holds a training run (best.pt, last.pt, metrics.csv): continue it with --resume, " \
           "start a new run with another --out, or replace it with --force" in err
    code, err = run([*base, "--resume", str(place / "other" / "last.pt")], capsys)
    assert code == 2 and "already holds a training run" in err, "another run's state is a new run here"
    for allowed in (["--resume"], ["--resume", "auto"], ["--resume", "runs/rafdb/last.pt"], ["--force"],
                    ["--out", "runs/new"]):
        work.clear()
        code, err = run([*base, *allowed], capsys)
        assert code == 0 and work, (allowed, err)
    assert {p.name: p.read_text() for p in out.iterdir() if p.is_file()} == \
        {"best.pt": "best.pt", "last.pt": "last.pt", "metrics.csv": "metrics.csv"}


@pytest.mark.parametrize("out", ["data", "data/valid/1", "data/new/deeper", "link/valid"])
def test_train_and_evaluate_refuse_an_out_inside_the_data(out, place, work, capsys):
    os.symlink(place / "data", place / "link")
    for argv in (["train", "--data", "data", "--dataset", "rafdb", "--out", out],
                 ["evaluate", "--data", "data", "--checkpoint", "c.pt", "--out", out],
                 ["train", "--data", "link", "--dataset", "rafdb", "--out", out.replace("link", "data")]):
        code, err = run(argv, capsys)
        assert code == 2 and not work, (argv, err)
        one_line_error(err, argv[0])
        assert "is inside the data folder" in err
    assert not (place / "data" / "new").exists()


def test_the_library_claims_the_run_folder_too(tmp_path):
    from poster_fast.training.loop import train
    from poster_fast.training.options import TrainOptions

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "best.pt").write_text("keep")
    with pytest.raises(UsageError, match="already holds a training run"):
        train(TrainOptions(data=str(tmp_path / "d"), dataset="rafdb", out=str(tmp_path / "run")))
    with pytest.raises(UsageError, match="is inside the data folder"):
        train(TrainOptions(data=str(tmp_path), dataset="rafdb", out=str(tmp_path / "run"), force=True))
    assert (tmp_path / "run" / "best.pt").read_text() == "keep"


HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from poster_fast.training.rundir import RunLock
    lock = RunLock(Path(sys.argv[1]))
    print("held", flush=True)
    time.sleep(600)
""")


def test_one_run_per_folder_and_a_killed_run_leaves_no_stale_lock(tmp_path):
    from poster_fast.training.options import TrainOptions
    from poster_fast.training.rundir import RunLock, claim_run_folder

    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        opts = TrainOptions(data=str(tmp_path / "d"), dataset="rafdb", out=str(out))
        with pytest.raises(UsageError, match=rf"another training run is writing there \(process {holder.pid}\)"):
            claim_run_folder(opts)
    finally:
        holder.kill()  # SIGKILL: no chance to unlock
        holder.wait()
    lock = claim_run_folder(opts)  # the kernel released it with the process
    with pytest.raises(UsageError, match="another training run"):
        RunLock(out)  # held, in this process too
    ready, tell = os.pipe()
    child = os.fork()  # a DataLoader worker: does not keep the lock alive
    if child == 0:
        import time

        os.write(tell, b"up")
        time.sleep(30)
        os._exit(0)
    try:
        assert os.read(ready, 2) == b"up"
        lock.release()
        RunLock(out).release()
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


# ----------------------------------------------------------------------------- D: special files

def special_files(folder: Path) -> list[Path]:
    """A FIFO and a socket named like images."""
    os.mkfifo(folder / "pipe.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "sock.png"))
    sock.close()
    return [folder / "pipe.jpg", folder / "sock.png"]


def test_predict_reports_special_files_and_never_opens_them(tmp_path):
    from poster_fast.inference.predict import predict_files

    folder = tmp_path / "in"
    folder.mkdir()
    photo(folder / "a.png", 0)
    pipe, sock = special_files(folder)
    with deadline():
        results = predict_files([folder, pipe], recognizer(FakeClassifier(), image_size=8), progress=False)
    errors = {Path(r.file).name: r.error for r in results}
    assert errors == {"a.png": None, "pipe.jpg": "is a named pipe (FIFO), not a regular file",
                      "sock.png": "is a socket, not a regular file"}


def test_training_data_with_a_special_file_is_refused_before_training(tmp_path):
    from poster_fast.data.datasets import ImageFolder
    from poster_fast.data.transforms import ToNormalizedTensor

    (tmp_path / "1").mkdir()
    photo(tmp_path / "1" / "a.png", 0)
    special_files(tmp_path / "1")
    folder = ImageFolder(tmp_path, ToNormalizedTensor(8))
    for decode in (False, True):
        with deadline(), pytest.raises(DataError, match=r"2 of the 3 image files .*pipe.jpg \(a named pipe \(FIFO\)"):
            folder.check_images(decode=decode)


def special_checkpoints(folder: Path) -> Path:
    os.mkfifo(folder / "pipe.pt")
    os.mkfifo(folder / "pipe.safetensors")
    (folder / "hf").mkdir()
    os.mkfifo(folder / "hf" / "config.json")
    return folder


def test_special_files_as_checkpoints_and_exported_files(tmp_path):
    from poster_fast.model import POSTERV2

    special_checkpoints(tmp_path)
    with deadline():
        for path, says in ((tmp_path / "pipe.pt", "pipe.pt: is a named pipe (FIFO)"),
                           (tmp_path / "pipe.safetensors", "pipe.safetensors: is a named pipe (FIFO)"),
                           (tmp_path / "hf", "config.json: cannot be read (a named pipe (FIFO), not a regular file)")):
            with pytest.raises(CheckpointError, match=re.escape(says)):
                POSTERV2.load_trained(path)


def test_special_files_as_checkpoint_options(tmp_path, place, work, capsys):
    special_checkpoints(tmp_path)
    with deadline():
        code, err = run(["predict", "photos", "--checkpoint", str(tmp_path / "pipe.pt")], capsys)
        assert code == 2 and "pipe.pt: is a named pipe (FIFO), not a regular file" in err and not work
        code, err = run(["predict", "photos", "--checkpoint", str(tmp_path / "hf")], capsys)
        assert code == 2 and "config.json: is a named pipe (FIFO)" in err and not work


def test_open_regular_refuses_a_fifo_put_in_place_after_the_look(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "late.jpg")
    regular = os.stat(__file__)
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: regular if str(p).endswith("late.jpg") else real_stat(p, *a, **k))
    with deadline(), pytest.raises(SpecialFileError, match="a named pipe"):
        open_regular(tmp_path / "late.jpg")


def test_ctrl_c_stops_the_image_check_at_once(monkeypatch):
    """The first Ctrl-C ends check_images without waiting for the files not yet checked."""
    from poster_fast.data import images

    calls = []

    def check_image(path, decode):
        calls.append(path)
        if len(calls) == 1:
            raise KeyboardInterrupt
        import time

        time.sleep(0.05)
    monkeypatch.setattr(images, "check_image", check_image)
    with pytest.raises(KeyboardInterrupt):
        images.check_images([f"{i}.png" for i in range(400)], decode=False, threads=4)
    assert len(calls) < 40, len(calls)


# ----------------------------------------------------------------------------- E: sizes bounded by the memory

@pytest.mark.parametrize("argv", [
    ["bench", "--quick", "--batch", "100000"],
    ["bench", "--quick", "--batch", "1000000000"],
    ["bench", "--quick", "--model-batch", "10000000", "--sections", "infer"],
    ["predict", "photos", "--checkpoint", "c.pt", "--batch-size", "100000000"],
    ["evaluate", "--data", "data", "--checkpoint", "c.pt", "--batch-size", "100000000"],
    ["train", "--data", "data", "--dataset", "rafdb", "--out", "out", "--batch-size", "10000000"],
])
def test_a_batch_larger_than_the_memory_is_refused_before_work(argv, place, work, capsys):
    code, err = run(argv, capsys)
    assert code == 2 and not work, err
    one_line_error(err, argv[0])
    assert "more than the memory can hold" in err and "expected at most" in err


@pytest.mark.parametrize("option, value", [("--iters", "1000000000"), ("--warmup", "1000000000"),
                                           ("--threads", "100000")])
def test_bench_counts_are_bounded(option, value, place, work, capsys):
    code, err = run(["bench", "--quick", option, value], capsys)
    assert code == 2 and not work and f"{option}: expected an integer from" in err


def test_the_memory_figures_are_lower_bounds_of_what_the_model_needs():
    """The bounds refuse only batches that cannot fit: each figure is at most what the model
    measurably needs per image (and not far below it)."""
    from poster_fast.model import POSTERV2
    from poster_fast.model.memory import INFER_BYTES_PER_IMAGE, TRAIN_BYTES_PER_IMAGE

    model = POSTERV2(7, attn_backend="reference").train()

    def saved(batch: int, amp: bool) -> int:
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                torch.autocast("cpu", torch.bfloat16, enabled=amp):
            model(torch.randn(batch, 3, 64, 64))
        return total[0]
    per_image = [(saved(3, amp) - saved(1, amp)) / 2 for amp in (False, True)]
    assert TRAIN_BYTES_PER_IMAGE <= min(per_image) < 1.2 * TRAIN_BYTES_PER_IMAGE, per_image
    largest = [0]

    def record(module, args, output):
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.numel() * output.element_size())
    hooks = [m.register_forward_hook(record) for m in model.modules() if not list(m.children())]
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        model.eval()(torch.randn(1, 3, 64, 64))
    for hook in hooks:
        hook.remove()
    assert INFER_BYTES_PER_IMAGE <= largest[0] < 1.2 * INFER_BYTES_PER_IMAGE


# ----------------------------------------------------------------------------- F: failed writes are status 3

WRITE_UNDER_LIMIT = textwrap.dedent("""
    import resource, signal, sys
    from poster_fast.commands.cli import main
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    sys.exit(main(sys.argv[1:]))
""")


def test_export_on_a_full_disk_is_status_3_naming_the_file(saved, tmp_path):
    out = tmp_path / "m.safetensors"
    out.write_text("the previous export")
    proc = subprocess.run([sys.executable, "-c", WRITE_UNDER_LIMIT, "export", str(saved[0]), "--safetensors",
                           str(out), "--force"], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.splitlines()[-1] == f"poster-fast export: error: cannot write {out}: File too large"
    assert "Traceback" not in proc.stderr
    assert out.read_text() == "the previous export" and sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_a_jsonl_timeline_that_cannot_grow_is_status_3_naming_it(tmp_path):
    """--jsonl writes a line per photo as it goes (files.LineFile): a line that cannot be written
    ends the timeline, the run goes on, and the end is one line naming the file and status 3."""
    first = photo(tmp_path / "a.png", 0)
    out = tmp_path / "t.jsonl"
    proc = subprocess.run([sys.executable, "-c", WRITE_UNDER_LIMIT.replace("1 << 20", "16"), "predict", str(first),
                           "--allow-random", "--no-detect", "--image-size", "32", "--quiet", "--device", "cpu",
                           "--jsonl", str(out)], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.splitlines()[-1] == ("poster-fast predict: error: 1 outputs could not be written (the "
                                            f"others were): {out} (File too large, after 0 lines)")
    assert "Traceback" not in proc.stderr


def test_a_jsonl_file_that_cannot_be_created_is_an_output_error(tmp_path, monkeypatch):
    from poster_fast import files
    from poster_fast.errors import OutputError

    def replace(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(files.os, "replace", replace)
    with pytest.raises(OutputError, match=re.escape(f"cannot write {tmp_path / 't.jsonl'}: No space left on device")):
        files.LineFile(tmp_path / "t.jsonl")
    assert list(tmp_path.iterdir()) == []


def test_train_stops_with_status_3_when_last_pt_cannot_be_written(tmp_path, monkeypatch, capsys):
    from poster_fast import checkpoint
    from test_train import TRAIN_ARGS, make_folder

    data = make_folder(tmp_path / "d", {"train": 2, "valid": 1})
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--epochs", "1", *TRAIN_ARGS]) == 0
    before = (out / "last.pt").read_bytes()
    real_write = checkpoint._RecordingFile.write

    def write(self, data):  # the disk fills while last.pt is written
        if Path(self.name).name.startswith("last.pt"):
            raise OSError(28, "No space left on device")
        return real_write(self, data)
    monkeypatch.setattr(checkpoint._RecordingFile, "write", write)
    capsys.readouterr()
    code = main(["train", "--data", str(data), "--out", str(out), "--epochs", "2", "--resume", *TRAIN_ARGS])
    err = capsys.readouterr().err
    assert code == 3
    assert err.splitlines()[-1] == (f"poster-fast train: error: cannot write {out / 'last.pt'}: No space left on "
                                    "device: training stopped after epoch 2 (the previous checkpoint of that name "
                                    "is intact)")
    assert "Traceback" not in err and (out / "last.pt").read_bytes() == before
    assert not list(out.glob("*.tmp"))


# ----------------------------------------------------------------------------- G: headers against the model

def safetensors_with(path: Path, dest: Path, edit) -> Path:
    """A copy of the safetensors file `path` with its JSON header changed by `edit`."""
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    dest.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])
    return dest


def test_a_safetensors_file_that_lies_about_a_dtype_is_refused(saved, tmp_path, capsys):
    from poster_fast.model import POSTERV2

    def lie(header):
        header["VIT.head.linear.weight"]["dtype"] = "I32"  # the same bytes, read as integers
    bad = safetensors_with(saved[1], tmp_path / "lie.safetensors", lie)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(bad))}: .*VIT.head.linear.weight: checkpoint "
                                              r"torch.int32 vs model torch.float32"):
        POSTERV2.load_trained(bad)
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    assert main(["predict", str(tmp_path / "x.png"), "--checkpoint", str(bad), "--quiet"]) == 2
    one_line_error(capsys.readouterr().err, "predict")

    def shape(header):
        header["VIT.head.linear.weight"]["dtype"] = "F16"
        header["VIT.head.linear.weight"]["shape"] = [2, 1536]  # the same bytes, other shape and dtype
    bad = safetensors_with(saved[1], tmp_path / "shape.safetensors", shape)
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(bad))}: .*mis-shaped.*VIT.head.linear.weight"):
        POSTERV2.load_trained(bad)


@pytest.mark.parametrize("edit, message", [
    ({"num_classes": 3}, "records num_classes 3, but its weights have 2 classes"),
    ({"classes": ["a", "b", "c"]}, "records 3 class names, but its weights have 2 classes"),
    ({"classes": ["a", "a"]}, "class names must be distinct; repeated: a"),
    ({"classes": ["a", 5]}, "expected class names"),
    ({"num_classes": 1}, "records num_classes 1, but its weights have 2 classes"),
])
def test_config_values_must_agree_with_the_weights(edit, message, model2, tmp_path):
    from poster_fast.model import POSTERV2

    folder = model2.save_pretrained(tmp_path / "hf", classes=["a", "b"])
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **edit}))
    for load in (POSTERV2.from_pretrained, POSTERV2.load_trained):
        with pytest.raises(CheckpointError, match=re.escape(message)):
            load(folder)


def test_a_deeply_nested_config_is_a_checkpoint_error(model2, tmp_path, capsys):
    from poster_fast.model import POSTERV2

    folder = model2.save_pretrained(tmp_path / "hf", classes=["a", "b"])
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match="config.json: cannot be read as JSON \\(nested too deeply"):
        POSTERV2.from_pretrained(folder)
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    assert main(["predict", str(tmp_path / "x.png"), "--checkpoint", str(folder), "--quiet"]) == 2
    one_line_error(capsys.readouterr().err, "predict")


def test_checkpoint_metadata_must_agree_with_the_weights(model2, tmp_path):
    from poster_fast.model import POSTERV2

    state = model2.state_dict()
    for meta, message in (({"num_classes": 7}, "records num_classes 7, but its weights have 2 classes"),
                          ({"classes": ["x", "x"]}, "class names must be distinct; repeated: x"),
                          ({"classes": ["x", " "]}, "expected non-empty class names")):
        path = tmp_path / "m.pt"
        torch.save({"state_dict": state, **meta}, path)
        with pytest.raises(CheckpointError, match=re.escape(message)):
            POSTERV2.load_trained(path)


# ----------------------------------------------------------------------------- H: class names

def test_fewer_than_two_classes_cannot_be_trained(tmp_path):
    from poster_fast.data.labels import resolve_classes
    from poster_fast.model import POSTERV2
    from poster_fast.training.data import TrainData
    from poster_fast.training.options import TrainOptions
    from test_train import make_folder

    data = make_folder(tmp_path / "d", {"train": 2, "valid": 1}, folders=("only",))
    with pytest.raises(DataError, match=r"1 class folder \(only\): a classifier needs at least 2 classes"):
        TrainData.load(TrainOptions(data=str(data), dataset="rafdb", classes=["happy"]))
    assert resolve_classes("rafdb", ["a", "b", "c"], ["x", "y", "z"]) == ["x", "y", "z"]  # other counts train
    with pytest.raises(ValueError, match="num_classes: expected an integer from 2 to 10000, got 1"):
        POSTERV2(1)
    assert POSTERV2(9)(torch.randn(1, 3, 64, 64)).shape == (1, 9)


def test_class_names_never_take_the_csv_columns_places():
    from poster_fast.faces import Box
    from poster_fast.inference.crops import Face, PhotoResult
    from poster_fast.inference.outputs import CSV_COLUMNS, csv_document

    classes = ["score", "label", "file", "x"]
    face = Face(Box(1, 2, 3, 4), label="score", score=0.7, probs=dict(zip(classes, [0.7, 0.1, 0.1, 0.1])))
    rows = list(__import__("csv").DictReader(csv_document([PhotoResult("p.png", faces=[face])], classes).splitlines()))
    assert rows[0]["file"] == "p.png" and rows[0]["score"] == "0.7" and rows[0]["label"] == "score"
    assert rows[0]["x"] == "1" and rows[0]["prob_x"] == "0.1" and rows[0]["prob_score"] == "0.7"
    assert not {f"prob_{c}" for c in classes} & set(CSV_COLUMNS)


# ----------------------------------------------------------------------------- I: messages

EVIL = textwrap.dedent("""
    import os, pickle, sys, torch
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + sys.argv[1] + "/ran",))
    torch.save({"state_dict": {}, "x": Evil()}, sys.argv[1] + "/zip.pt")
    torch.save({"x": Evil()}, sys.argv[1] + "/legacy.pt", _use_new_zipfile_serialization=False)
    with open(sys.argv[1] + "/raw.pkl", "wb") as f:
        pickle.dump(Evil(), f, protocol=4)
""")


def test_a_pickle_that_would_run_code_says_it_needs_trusted(tmp_path):
    from poster_fast.model import POSTERV2

    subprocess.run([sys.executable, "-c", EVIL, str(tmp_path)], check=True)
    for name in ("zip.pt", "legacy.pt", "raw.pkl"):
        with pytest.raises(CheckpointError, match=rf"{name}: the file holds pickled Python objects besides tensors "
                                                  r"\(it names posix.system\).*runs code.*pass --trusted"):
            POSTERV2.load_trained(tmp_path / name)
    assert not (tmp_path / "ran").exists()


def test_safetensors_errors_name_the_file(model2, tmp_path):
    from poster_fast.hub import save_safetensors
    from poster_fast.model import POSTERV2

    model = POSTERV2(2)
    with torch.no_grad():
        model.VIT.head.linear.weight[0, 0] = float("nan")
    path = save_safetensors(tmp_path / "nan.safetensors", model)
    for load in (POSTERV2.load_trained, POSTERV2.load_exported, POSTERV2.from_checkpoint):
        with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))}: 1 tensors .* NaN"):
            load(path)


def test_unknown_options_name_the_command(capsys):
    assert run(["predict", "x.png", "--bogus", "1"], capsys) == \
        (2, "poster-fast predict: error: unrecognized arguments: --bogus 1 (see poster-fast predict --help)\n")


def test_model_input_of_another_dtype_is_a_clear_error(model2):
    x = torch.randn(1, 3, 32, 32)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        with pytest.raises(TypeError, match=rf"^x: expected torch.float32 images, the dtype of the model's weights, "
                                            rf"got {dtype}"):
            model2(x.to(dtype))
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        assert model2(x.bfloat16()).shape == (1, 2)  # autocast decides the dtypes


def test_from_pretrained_offline_is_a_checkpoint_error(monkeypatch):
    from poster_fast.model import POSTERV2

    hub = types.ModuleType("huggingface_hub")
    hub.__spec__ = __import__("importlib").machinery.ModuleSpec("huggingface_hub", None)

    def snapshot_download(repo_id, allow_patterns):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")
    hub.snapshot_download = snapshot_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    with pytest.raises(CheckpointError, match="owner/name: no such folder, and it cannot be downloaded from the "
                                              "Hugging Face Hub \\(OSError: We couldn't connect"):
        POSTERV2.from_pretrained("owner/name")


def test_a_failed_hub_upload_is_status_3_naming_the_repository(saved, tmp_path, monkeypatch, capsys):
    hub = types.ModuleType("huggingface_hub")
    hub.__spec__ = __import__("importlib").machinery.ModuleSpec("huggingface_hub", None)

    class HfApi:
        def create_repo(self, repo_id, exist_ok):
            raise OSError("Invalid user token")
    hub.HfApi = HfApi
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    out = tmp_path / "hf"
    assert main(["export", str(saved[0]), "--pretrained", str(out), "--push-to-hub", "owner/name"]) == 3
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (f"poster-fast export: error: cannot upload {out} to the Hugging Face Hub "
                                    "repository owner/name (OSError: Invalid user token); the folder is written")
    assert "Traceback" not in err and (out / "model.safetensors").is_file()


def test_export_creates_a_missing_folder(saved, tmp_path):
    out = tmp_path / "new" / "deeper" / "m.safetensors"
    assert main(["export", str(saved[0]), "--safetensors", str(out), "--pretrained", str(tmp_path / "a" / "hf")]) == 0
    assert out.is_file() and (tmp_path / "a" / "hf" / "config.json").is_file()


def test_an_unknown_cpu_isa_is_one_line_before_the_model_loads(place, work, capsys, monkeypatch):
    from poster_fast.ops import extension

    if extension._C is None:
        pytest.skip("poster_fast._C is not built")
    monkeypatch.setenv("POSTER_FAST_CPU_ISA", "avx9000")
    for argv in (["budget"], BASE["predict"]):
        code, err = run(argv, capsys)
        assert code == 2 and not work
        one_line_error(err, argv[0])
        assert "POSTER_FAST_CPU_ISA: expected one of auto, " in err and "got 'avx9000'" in err


def write_video(path: Path, frames: int, fps: float) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path


def test_every_far_above_the_frame_rate_still_annotates(tmp_path, capsys):
    pytest.importorskip("cv2")
    clip = write_video(tmp_path / "clip.avi", 5, 25.0)
    code = main(["predict", str(clip), "--allow-random", "--no-detect", "--image-size", "32", "--quiet",
                 "--device", "cpu", "--every", "100000", "--annotate", str(tmp_path / "ann")])
    assert code == 0, capsys.readouterr().err
    assert [p.suffix for p in (tmp_path / "ann").iterdir()] in ([".mp4"], [".avi"])


@pytest.mark.parametrize("stem", ["a" * 251, "é" * 125 + "a", "b" * 240])
def test_long_input_names_can_be_annotated(stem, tmp_path, capsys):
    """Names up to the file system's 255 bytes: the annotated name and its temporary name fit."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    first = photo(inputs / f"{stem}.png", 0)
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / first.name).write_text("the user's")  # so the annotated name takes a suffix
    code = main(["predict", str(first), "--allow-random", "--no-detect", "--image-size", "32", "--quiet",
                 "--device", "cpu", "--annotate", str(tmp_path / "ann")])
    assert code == 0, capsys.readouterr().err
    names = sorted(p.name for p in (tmp_path / "ann").iterdir())
    assert len(names) == 2 and all(len(n.encode()) <= 255 for n in names)
    assert (tmp_path / "ann" / first.name).read_text() == "the user's"

