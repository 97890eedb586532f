"""`poster-fast predict` on real photographs (scikit-image's sample data) and the image/label helpers."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from command_utils import random_rafdb_checkpoint
from poster_fast.commands.cli import main
from poster_fast.data.images import load_image
from poster_fast.data.labels import DATASETS, class_names, resolve_classes
from poster_fast.errors import DataError

skdata = pytest.importorskip("skimage.data")
RAFDB = list(DATASETS["rafdb"].classes)
# The astronaut's face in skimage.data.astronaut() (512x512): roughly x 175-270, y 65-165.
FACE_CENTRE = (222, 115)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    face = skdata.astronaut()
    Image.fromarray(face).save(d / "astronaut.jpg")
    Image.fromarray(face).convert("RGBA").save(d / "rgba.png")
    Image.fromarray(face).convert("L").save(d / "gray.png")
    Image.fromarray(face[..., 0].astype(np.uint16) * 257).save(d / "sixteen_bit.png")
    Image.fromarray(skdata.chelsea()).save(d / "cat.jpg")  # a photo with no human face
    (d / "broken.jpg").write_bytes(b"not an image")
    return d


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return random_rafdb_checkpoint(tmp_path_factory.mktemp("ckpt") / "rafdb.pt")


def test_predict_photos_json_csv_annotate(photos, checkpoint, tmp_path, capsys):
    out_json, out_csv, ann = tmp_path / "p.json", tmp_path / "p.csv", tmp_path / "annotated"
    rc = main(["predict", str(photos), str(tmp_path / "missing.jpg"), "--checkpoint", str(checkpoint),
               "--json", str(out_json), "--csv", str(out_csv), "--annotate", str(ann), "--batch-size", "3"])
    assert rc == 0
    table = capsys.readouterr().out
    doc = json.loads(out_json.read_text())
    assert doc["classes"] == RAFDB
    by_name = {r["file"].rsplit("/", 1)[-1]: r for r in doc["results"]}
    assert set(by_name) == {"astronaut.jpg", "rgba.png", "gray.png", "sixteen_bit.png", "cat.jpg",
                            "broken.jpg", "missing.jpg"}
    for name in ("astronaut.jpg", "rgba.png", "gray.png", "sixteen_bit.png"):
        r = by_name[name]
        assert r["error"] is None and len(r["faces"]) == 1, r
        face = r["faces"][0]
        x, y, w, h = face["box"]
        assert x < FACE_CENTRE[0] < x + w and y < FACE_CENTRE[1] < y + h
        assert face["label"] in RAFDB and set(face["probs"]) == set(RAFDB)
        assert sum(face["probs"].values()) == pytest.approx(1.0, abs=1e-4)
        assert face["score"] == pytest.approx(max(face["probs"].values()), abs=1e-6)
        assert (ann / (name.rsplit(".", 1)[0] + ".png")).is_file()
    assert "no face found" in by_name["cat.jpg"]["error"] and not by_name["cat.jpg"]["faces"]
    assert "cannot read image" in by_name["broken.jpg"]["error"]
    assert "no such file" in by_name["missing.jpg"]["error"]
    assert len(list(ann.iterdir())) == 4
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 7 and {"label", "score", *RAFDB} <= set(rows[0])
    assert "astronaut.jpg" in table and "error: no face found" in table


def test_predict_no_detect_and_class_override(photos, tmp_path, capsys):
    rc = main(["predict", str(photos / "astronaut.jpg"), "--allow-random", "--no-detect",
               "--classes", "a,b,c", "--json", "--quiet"])
    assert rc == 0
    face = json.loads(capsys.readouterr().out)["results"][0]["faces"][0]
    assert face["box"] == [0, 0, 512, 512] and set(face["probs"]) == {"a", "b", "c"}


def test_predict_refuses_without_checkpoint(photos, capsys):
    assert main(["predict", str(photos / "astronaut.jpg")]) == 2
    assert "--checkpoint is required" in capsys.readouterr().err


def test_predict_class_count_mismatch(photos, checkpoint, capsys):
    assert main(["predict", str(photos / "astronaut.jpg"), "--checkpoint", str(checkpoint),
                 "--dataset", "affectnet8"]) == 2
    assert "8 classes but the model has 7" in capsys.readouterr().err


def test_load_image_modes(photos):
    for name in ("rgba.png", "gray.png", "sixteen_bit.png"):
        img = load_image(photos / name)
        assert img.mode == "RGB" and img.size == (512, 512)
    sixteen = np.asarray(load_image(photos / "sixteen_bit.png"))[..., 0]
    assert np.array_equal(sixteen, skdata.astronaut()[..., 0])  # 16 bits scaled back to 8
    with pytest.raises(DataError, match="broken.jpg"):
        load_image(photos / "broken.jpg")


def test_class_mapping_follows_official_labels():
    assert resolve_classes("rafdb", list("1234567")) == RAFDB
    assert resolve_classes("affectnet8", list("01234567"))[7] == "Contempt"
    assert resolve_classes("caers", ["anger", "disgust", "fear", "happy", "neutral", "sad", "surprise"])[0] == "Anger"
    with pytest.raises(DataError, match="rafdb label numbering"):
        resolve_classes("rafdb", list("0123456"))  # a 0-based copy would be mislabelled
    assert resolve_classes("rafdb", list("0123456"), RAFDB) == RAFDB
    with pytest.raises(DataError, match="--classes gives 2 names"):
        resolve_classes("rafdb", list("1234567"), ["a", "b"])


def test_class_names_sources():
    """--classes, else --dataset, else the checkpoint's names, else its dataset's; with folders
    (evaluate) the folders must follow the numbering the names come from."""
    recorded = {"dataset": "rafdb", "classes": RAFDB}
    assert class_names(3, recorded, "rafdb", ["a", "b", "c"]) == ["a", "b", "c"]
    assert class_names(8, recorded, "affectnet8")[7] == "Contempt"
    assert class_names(7, recorded) == RAFDB == class_names(7, {"dataset": "rafdb"})
    assert class_names(2, {"classes": ["x", "y"]}, folders=["0", "1"]) == ["x", "y"]
    with pytest.raises(DataError, match="records no class names"):
        class_names(7, {})
    with pytest.raises(DataError, match="--dataset affectnet8 gives 8 classes but the model has 7"):
        class_names(7, recorded, "affectnet8")
    with pytest.raises(DataError, match="rafdb label numbering"):
        class_names(7, recorded, folders=list("0123456"))  # trained with the official names
    with pytest.raises(DataError, match="gives 2 classes but there are 3 class folders"):
        class_names(2, {"classes": ["x", "y"]}, folders=["0", "1", "2"])


@pytest.mark.parametrize("opencv", [True, False])
def test_fallback_cascades(opencv, monkeypatch):
    """The fallback where cv2.FaceDetectorYN is missing: OpenCV's Haar cascade where cv2 has one
    (OpenCV 5 has none), else scikit-image's LBP cascade; no score, no landmarks."""
    import sys

    from poster_fast.faces.cascade import Cascade

    expected = "opencv-lbp"
    if not opencv:
        monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError
    elif hasattr(pytest.importorskip("cv2"), "CascadeClassifier"):  # OpenCV 5 has none
        expected = "opencv-haar"
    detector = Cascade()
    assert detector.name.startswith(expected) and not detector.landmarks
    (found,) = detector(skdata.astronaut())
    b = found.box
    assert b.x < FACE_CENTRE[0] < b.x + b.w and b.y < FACE_CENTRE[1] < b.y + b.h
    assert found.score is None and found.landmarks is None
    assert detector(skdata.chelsea()) == []


def test_class_names_precedence_through_the_loader(checkpoint, tmp_path, capsys):
    """--classes, else --dataset's table, else the checkpoint's names, else its dataset's table."""
    from poster_fast.inference.classifier import load_classifier

    state = torch.load(checkpoint, weights_only=True)
    named = tmp_path / "named.pt"
    torch.save({**state, "classes": list("ABCDEFG")}, named)
    unnamed = tmp_path / "unnamed.pt"
    torch.save({k: v for k, v in state.items() if k != "classes"}, unnamed)
    assert load_classifier(named).classes == list("ABCDEFG")
    assert load_classifier(unnamed).classes == RAFDB
    assert load_classifier(named, dataset="caers").classes == list(DATASETS["caers"].classes)
    assert "trained on rafdb, labelling as caers" in capsys.readouterr().err
    assert load_classifier(named, dataset="caers", classes=list("abcdefg")).classes == list("abcdefg")
