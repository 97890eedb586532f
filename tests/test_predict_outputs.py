"""predict's outputs: checked before the work, written atomically, never over an input, one
failure does not lose the others; non-finite outputs are errors and the JSON stays valid;
memory is bounded by the face crops; how input folders are walked (links, loops, hidden files)."""
from __future__ import annotations

import json
import os
import weakref
from pathlib import Path

import pytest
import torch
from PIL import Image

from command_utils import FakeClassifier, photo, recognizer
from poster_fast.commands.cli import main
from poster_fast.files import atomic_path, remove_stale_temps
from poster_fast.inference import outputs
from poster_fast.inference.crops import FaceBatches
from poster_fast.inference.predict import collect_inputs, predict_files

RANDOM = ["--allow-random", "--no-detect", "--image-size", "32", "--quiet", "--device", "cpu"]


def strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_annotate_into_the_input_folder_never_overwrites_an_input(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    inputs = [photo(folder / "a.jpg", 0), photo(folder / "a.png", 1)]
    before = {p: p.read_bytes() for p in inputs}
    out_json = tmp_path / "new" / "sub" / "out.json"  # folders that do not exist yet
    assert main(["predict", str(folder), "--annotate", str(folder), "--json", str(out_json), *RANDOM]) == 0
    assert {p: p.read_bytes() for p in inputs} == before
    annotated = sorted(p.name for p in folder.iterdir() if p not in inputs)
    assert annotated == ["a_1.png", "a_2.png"]
    assert Image.open(folder / "a_1.png").size == (40, 30)
    doc = strict_json(out_json.read_text())
    assert [r["file"] for r in doc["results"]] == [str(p) for p in inputs]
    assert "2 annotated photos" in capsys.readouterr().err


def test_one_failed_output_does_not_lose_the_others(tmp_path, monkeypatch, capsys):
    inputs = [photo(tmp_path / f"p{i}.png", i) for i in range(3)]
    real_annotate, real_write = outputs.annotate, outputs._write

    def annotate(img, faces, dest):
        if dest.name == "p1.png":
            raise OSError(28, "No space left on device")
        real_annotate(img, faces, dest)

    def write(dest, text):
        if dest.endswith(".csv"):
            raise OSError(13, "Permission denied")
        real_write(dest, text)
    monkeypatch.setattr(outputs, "annotate", annotate)
    monkeypatch.setattr(outputs, "_write", write)
    ann, out_json, out_csv = tmp_path / "ann", tmp_path / "o.json", tmp_path / "o.csv"
    code = main(["predict", *map(str, inputs), "--annotate", str(ann), "--json", str(out_json),
                 "--csv", str(out_csv), *RANDOM])
    err = capsys.readouterr().err.splitlines()
    assert code == 3
    assert err[-1].startswith("poster-fast predict: error: 2 outputs could not be written (the others were)")
    assert "o.csv (Permission denied)" in err[-1] and "p1.png (No space left on device)" in err[-1]
    assert len(strict_json(out_json.read_text())["results"]) == 3
    assert sorted(p.name for p in ann.iterdir()) == ["p0.png", "p2.png"]
    assert not list(tmp_path.rglob("*.tmp")) and not out_csv.exists()


def test_non_finite_outputs_are_errors_and_the_json_stays_valid(tmp_path):
    files = [str(photo(tmp_path / f"p{i}.png", i)) for i in range(3)]
    results = predict_files(files, recognizer(FakeClassifier(nan=lambda i: i == 1), image_size=8), progress=False)
    assert [r.classified for r in results] == [1, 0, 1]
    assert "the model output is not finite (nan)" in results[1].error
    doc = strict_json(outputs.json_document(results, ["x", "y"], None))
    face = doc["results"][1]["faces"][0]
    assert face["label"] is None and face["score"] is None and face["probs"] is None
    assert "error: face 0: the model output is not finite" in outputs.format_table(results)
    rows = outputs.csv_document(results, ["x", "y"]).splitlines()
    assert len(rows) == 1 + 3 + 1  # header, a row per face, one per error


def test_memory_is_bounded_by_the_face_crops_not_the_photos(tmp_path, monkeypatch):
    """All photos wait for one batch (batch 100): none of the decoded photos is alive when the
    batch runs, with or without annotations (the annotator reads each photo again)."""
    import poster_fast.inference.predict as predict

    alive: list[weakref.ref] = []
    real = predict.load_image

    def load(path):
        img = real(path)
        alive.append(weakref.ref(img))
        return img
    monkeypatch.setattr(predict, "load_image", load)
    files = [str(photo(tmp_path / f"p{i}.png", i, size=(300, 200))) for i in range(5)]
    for annotator in (None, outputs.Annotator(tmp_path / "ann")):
        classifier = FakeClassifier(alive=alive)
        predict_files(files, recognizer(classifier, image_size=8, batch_size=100), on_classified=annotator,
                      progress=False)
        assert classifier.alive_at_batch == [0]
    assert annotator.failed == [] and len(list((tmp_path / "ann").iterdir())) == 5


def test_face_batches_refuse_bad_sizes():
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1, got 0"):
        FaceBatches(FakeClassifier(), 0)
    with pytest.raises(ValueError, match="margin: expected a finite number from 0 to 10, got -1"):
        recognizer(FakeClassifier(), margin=-1.0)
    with pytest.raises(TypeError, match="image_size: expected an integer from 1 to 1024, got '224' \\(str\\)"):
        recognizer(FakeClassifier(), image_size="224")


def test_input_folders_links_loops_hidden_and_repeats(tmp_path):
    root, outside = tmp_path / "in", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    (root / ".cache").mkdir()
    outside.mkdir()
    photo(root / "a.png", 0)
    photo(root / "sub" / "b.png", 1)
    photo(root / ".cache" / "c.png", 2)
    photo(root / ".d.png", 3)
    photo(outside / "e.png", 4)
    os.symlink(outside / "e.png", root / "e.png")  # a link to a file elsewhere: followed
    os.symlink(root, root / "sub" / "loop")  # a loop: walked once
    os.symlink(root / "sub", root / "again")  # a second way into sub/: walked once
    os.symlink(tmp_path / "nowhere", tmp_path / "dead.png")
    found = collect_inputs([root, root / "a.png", outside / "e.png", tmp_path / "dead.png", tmp_path / "none"])
    names = [(Path(p).relative_to(tmp_path).as_posix(), e) for p, e in found]
    assert names == [("in/a.png", None), ("in/e.png", None), ("in/again/b.png", None),
                     ("dead.png", "a link to nothing (broken symbolic link)"),
                     ("none", "no such file or folder")]


def test_atomic_path_and_stale_temporary_files(tmp_path):
    dest = tmp_path / "x.json"
    dest.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert dest.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]
    with atomic_path(dest) as tmp:
        tmp.write_text("new")
    assert dest.read_text() == "new"
    for name in ("last.pt.tmp", "last.pt.0a1b2c3d.tmp", "best.pt.ffff0000.tmp", "mine.tmp"):
        (tmp_path / name).write_text("stale")
    removed = remove_stale_temps(tmp_path, ["last.pt", "best.pt"])
    assert sorted(p.name for p in removed) == ["best.pt.ffff0000.tmp", "last.pt.0a1b2c3d.tmp", "last.pt.tmp"]
    assert (tmp_path / "mine.tmp").exists()


def test_json_is_always_valid():
    from poster_fast.files import json_text
    from poster_fast.training.metrics import EvalResult

    doc = strict_json(json_text({"loss": float("nan"), "accs": [float("inf"), 0.5], "n": 3}))
    assert doc == {"loss": None, "accs": [None, 0.5], "n": 3}
    no_second_class = EvalResult(0.1, torch.tensor([[2.0, 0.0], [0.0, 0.0]]))  # per-class accuracy nan
    assert strict_json(json_text(no_second_class.as_dict(["a", "b"])))["per_class"]["b"]["acc"] is None
