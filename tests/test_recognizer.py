"""poster_fast.Recognizer, the Python API: built from a checkpoint or a save_pretrained folder; an
RGB array, a BGR array (bgr=True), a PIL image or a path give the same faces and probabilities;
.batch classifies many images' crops together with the same results; predict gives what it gives."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import poster_fast
from command_utils import random_rafdb_checkpoint
from poster_fast import POSTERV2
from poster_fast.commands.cli import main
from poster_fast.data.labels import DATASETS
from poster_fast.errors import DataError
from poster_fast.faces import yunet

skdata = pytest.importorskip("skimage.data")
pytest.importorskip("cv2")
if not yunet.available():
    pytest.skip("this OpenCV has no FaceDetectorYN", allow_module_level=True)

RAFDB = list(DATASETS["rafdb"].classes)
SIZE = 112  # crops: small, to be quick
FACE = (223.5, 120.0)  # the astronaut's face centre


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return random_rafdb_checkpoint(tmp_path_factory.mktemp("ckpt") / "rafdb.pt")


@pytest.fixture(scope="module")
def rec(checkpoint):
    return poster_fast.Recognizer.from_checkpoint(checkpoint, device="cpu", precision="fp32", image_size=SIZE)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.fromarray(skdata.astronaut()).save(path)
    return path


def probs(face) -> list[float]:
    return [face.probs[name] for name in RAFDB]


def test_one_face_with_everything(rec):
    assert rec.classes == RAFDB and rec.aligned and rec.run_info["detector"] == "yunet-s"
    (face,) = rec(skdata.astronaut())
    b = face.box
    assert b.x < FACE[0] < b.x + b.w and b.y < FACE[1] < b.y + b.h
    assert 0.7 <= face.detection_score <= 1 and face.landmarks.shape == (5, 2)
    assert face.label in RAFDB and face.score == pytest.approx(max(face.probs.values()), abs=1e-6)
    assert sum(face.probs.values()) == pytest.approx(1, abs=1e-5)


def test_array_bgr_pil_and_path_agree(rec, photo):
    rgb = skdata.astronaut()
    (want,) = rec(rgb)
    for image, bgr in ((np.ascontiguousarray(rgb[..., ::-1]), True), (Image.fromarray(rgb), False),
                       (photo, False), (str(photo), False)):
        (face,) = rec(image, bgr=bgr)
        assert face.box == want.box
        np.testing.assert_allclose(probs(face), probs(want), rtol=0, atol=1e-6)


def test_batch_matches_one_at_a_time(rec, photo):
    rgb = skdata.astronaut()
    two = np.concatenate([rgb, rgb[:, ::-1]], axis=1)
    images = [rgb, two, skdata.chelsea(), photo]
    one_by_one = [rec(image) for image in images]
    together = rec.batch(images)
    assert [len(faces) for faces in together] == [1, 2, 0, 1]
    for faces, expected in zip(together, one_by_one, strict=True):
        assert [f.box for f in faces] == [f.box for f in expected]
        for f, e in zip(faces, expected):
            np.testing.assert_allclose(probs(f), probs(e), rtol=0, atol=2e-6)


@pytest.mark.parametrize("overlap", [True, False], ids=["thread", "inline"])
def test_batch_is_the_same_with_the_crops_prepared_in_a_thread_or_inline(rec, overlap, monkeypatch):
    images = [skdata.astronaut(), skdata.chelsea(), skdata.astronaut()[:, ::-1]]
    want = rec.batch(images)
    monkeypatch.setattr(rec, "overlap", overlap)
    got = rec.batch(images)
    assert [[f.box for f in faces] for faces in got] == [[f.box for f in faces] for faces in want]
    for faces, expected in zip(got, want):
        for f, e in zip(faces, expected):
            np.testing.assert_allclose(probs(f), probs(e), rtol=0, atol=2e-6)


@pytest.mark.parametrize("device, cores, threads, expected", [
    ("cpu", 2, 2, False), ("cpu", 8, 8, False), ("cpu", 4, 2, True), ("cuda", 2, 2, True)])
def test_crops_are_prepared_in_a_thread_only_where_cores_are_left(device, cores, threads, expected, monkeypatch):
    from poster_fast.inference.recognizer import overlaps
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    assert overlaps(torch.device(device)) is expected


def test_bad_images_are_named(rec, tmp_path):
    with pytest.raises(ValueError, match="image: expected an H x W x 3 \\(or H x W\\) uint8 array, got a float64"):
        rec(np.zeros((8, 8, 3)))
    with pytest.raises(ValueError, match="image: expected"):
        rec(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(TypeError, match="image: expected a numpy array, a PIL image or a path, got int"):
        rec(3)
    with pytest.raises(DataError):
        rec(tmp_path / "missing.png")


def test_without_detection_the_image_is_the_face(checkpoint):
    rec = poster_fast.Recognizer.from_checkpoint(checkpoint, device="cpu", precision="fp32", image_size=SIZE,
                                                 detect=False)
    (face,) = rec(skdata.astronaut())
    assert (face.box.w, face.box.h) == (512, 512) and face.detection_score is None and face.landmarks is None


def test_from_pretrained_folder(tmp_path):
    torch.manual_seed(1)
    POSTERV2(7).save_pretrained(tmp_path / "model", classes=list("ABCDEFG"))
    rec = poster_fast.Recognizer.from_pretrained(tmp_path / "model", device="cpu", precision="fp32", image_size=SIZE)
    assert rec.classes == list("ABCDEFG")
    (face,) = rec(skdata.astronaut())
    assert set(face.probs) == set("ABCDEFG")


def test_predict_gives_what_the_recognizer_gives(rec, checkpoint, photo, tmp_path):
    out = tmp_path / "p.json"
    assert main(["predict", str(photo), "--checkpoint", str(checkpoint), "--device", "cpu", "--precision", "fp32",
                 "--image-size", str(SIZE), "--json", str(out), "--quiet"]) == 0
    (face,) = json.loads(out.read_text())["results"][0]["faces"]
    (want,) = rec(photo)
    assert face["box"] == [want.box.x, want.box.y, want.box.w, want.box.h]
    np.testing.assert_allclose([face["probs"][n] for n in RAFDB], probs(want), rtol=0, atol=2e-6)
