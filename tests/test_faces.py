"""Faces: the shipped YuNet model (its sha256 checked), detection quality on the test images of
tests/face_images.py, the aligned crops (a tilted face comes out upright), boxes and landmarks in
the coordinates of the image given (EXIF rotation included), and what predict writes of them."""
from __future__ import annotations

import csv
import json
import math
from importlib import resources

import numpy as np
import pytest
from PIL import Image

from command_utils import FakeClassifier, recognizer, run
from face_images import ASTRONAUT_EYES, astronaut, face_images, rotate, score
from poster_fast.commands.cli import main
from poster_fast.errors import DataError
from poster_fast.faces import TEMPLATE, Box, Detection, aligned_crop, load_detector, similarity, yunet
from poster_fast.faces.align import template
from poster_fast.inference.crops import Face
from poster_fast.inference.outputs import LANDMARK_COLOURS, draw_faces

cv2 = pytest.importorskip("cv2")
if not yunet.available():
    pytest.skip("this OpenCV has no FaceDetectorYN", allow_module_level=True)


@pytest.fixture(scope="module")
def detector():
    return load_detector()


def test_the_shipped_model_is_checked_and_named(detector, monkeypatch):
    folder = resources.files("poster_fast.faces").joinpath("models")
    assert {p.name for p in folder.iterdir()} >= {yunet.MODEL, "LICENSE", "SOURCE"}
    assert "Apache License" in folder.joinpath("LICENSE").read_text()
    assert yunet.MODEL_SHA256 in folder.joinpath("SOURCE").read_text()
    assert detector.name == "yunet-s" and detector.landmarks
    monkeypatch.setattr(yunet, "MODEL_SHA256", "0" * 64)
    with pytest.raises(DataError, match="yunet_s_640_640.onnx shipped in poster_fast has sha256 8f2383e4"):
        load_detector()


def test_detector_options_are_checked():
    with pytest.raises(ValueError, match="threshold: expected"):
        load_detector(threshold=0.0)
    with pytest.raises(ValueError, match="min_face: expected"):
        load_detector(min_face=0)


def test_detection_quality_on_the_test_images(detector):
    """Recall >= 0.97 with at most one false face over the whole set (tilted up to 45 degrees,
    faces down to 22 px, grey, two faces, no face), every face found with its landmarks."""
    cases = face_images()
    s = score(cases, lambda image: [((d.box.x, d.box.y, d.box.w, d.box.h), d.landmarks) for d in detector(image)])
    everything = s["all"]
    assert everything.recall >= 0.97, everything.missed
    assert everything.false <= 1, everything.false_in
    assert everything.without_landmarks == 0
    assert s["tilt"].found == s["tilt"].faces, s["tilt"].missed


def test_a_face_that_no_region_view_finds_again_is_dropped(detector, monkeypatch):
    """The refinement's region views confirm each face: the galaxy of scikit-image's Hubble deep
    field that YuNet's passes take for a face (score 0.70) is not found again, so not reported;
    the astronaut is, unless the region views are made to find nothing."""
    skdata = pytest.importorskip("skimage.data")
    assert detector(skdata.hubble_deep_field()) == []
    assert len(detector(skdata.astronaut())) == 1
    monkeypatch.setattr(detector, "region", lambda *args: None)
    assert detector(skdata.astronaut()) == []


def eye_angle(eyes: np.ndarray) -> float:
    """The eye line's angle, degrees (0: level)."""
    (rx, ry), (lx, ly) = eyes
    return math.degrees(math.atan2(ly - ry, lx - rx))


@pytest.mark.parametrize("degrees", [30, -30, 45, -45])
def test_a_tilted_face_gives_an_upright_crop_and_maps_back(detector, degrees):
    photo, face = astronaut()
    image, (tilted,) = rotate(photo, [face], degrees)
    (found,) = detector(image)
    # In the image's coordinates: the box on the face, the eyes where the rotation put them.
    cx, cy = found.centre
    assert math.hypot(cx - tilted.cx, cy - tilted.cy) < 0.15 * tilted.size
    np.testing.assert_allclose(found.landmarks[:2], tilted.eyes, atol=0.08 * tilted.size)
    assert found.tilt == pytest.approx(degrees, abs=6)
    crop, m = aligned_crop(image, found.landmarks, 224, 0.2)
    assert crop.shape == (224, 224, 3)
    true_eyes = np.array(tilted.eyes) @ m[:, :2].T + m[:, 2]
    assert abs(eye_angle(true_eyes)) < 4  # the true eyes, level in the crop
    np.testing.assert_allclose(true_eyes, template(224, 0.2)[:2], atol=10)


def test_alignment_fits_the_template_exactly_when_it_can():
    rng = np.random.default_rng(0)
    for _ in range(5):
        angle, scale, shift = rng.uniform(-np.pi, np.pi), rng.uniform(0.2, 5), rng.uniform(-100, 100, 2)
        rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        points = TEMPLATE * 100 @ rot.T + shift
        m = similarity(points, TEMPLATE * 100)
        np.testing.assert_allclose(points @ m[:, :2].T + m[:, 2], TEMPLATE * 100, atol=1e-9)
    assert TEMPLATE[0, 1] == TEMPLATE[1, 1] and TEMPLATE[0, 0] == -TEMPLATE[1, 0]  # eyes level, symmetric
    with pytest.raises(ValueError, match="all five points coincide"):
        similarity(np.zeros((5, 2)), TEMPLATE)


def test_an_upright_aligned_crop_frames_the_face_as_the_axis_aligned_crop(detector):
    """The template is the mean upright face: the aligned crop of the astronaut lies within a few
    pixels of its axis-aligned crop (same margin)."""
    photo, _ = astronaut()
    (found,) = detector(photo)
    _, m = aligned_crop(photo, found.landmarks, 224, 0.2)
    side = max(found.box.w, found.box.h) * 1.4
    cx, cy = found.centre
    corners = np.array([[cx - side / 2, cy - side / 2], [cx + side / 2, cy + side / 2]]) @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(corners, [[0, 0], [224, 224]], atol=0.1 * 224)


@pytest.mark.parametrize("orientation,transpose", [(6, Image.Transpose.ROTATE_90), (3, Image.Transpose.ROTATE_180),
                                                   (8, Image.Transpose.ROTATE_270)])
def test_exif_rotated_photo_reports_upright_coordinates(detector, tmp_path, orientation, transpose):
    """A photo stored rotated with an EXIF orientation: its faces are reported in the upright
    photo's coordinates, as it is displayed (and as the annotated photo is drawn)."""
    photo, face = astronaut()
    stored = Image.fromarray(photo).transpose(transpose)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"rotated{orientation}.jpg"
    stored.save(path, exif=exif, quality=95)
    (found,) = recognizer(FakeClassifier(), detector)(path)
    assert math.hypot(found.box.x + found.box.w / 2 - face.cx, found.box.y + found.box.h / 2 - face.cy) < 10
    np.testing.assert_allclose(found.landmarks[:2], ASTRONAUT_EYES, atol=6)


def test_min_face_and_threshold(detector):
    photo, _ = astronaut()
    assert len(load_detector(min_face=200)(photo)) == 0  # the face is ~100 px
    (kept,) = detector(photo)
    assert load_detector(threshold=min(1.0, kept.score + 0.01))(photo) == []


def test_annotation_draws_landmarks():
    img = Image.new("RGB", (200, 200), (128, 128, 128))
    marks = np.array([[70, 80], [130, 80], [100, 110], [75, 140], [125, 140]], np.float32)
    face = Face(Box(50, 50, 100, 120), 0.9, marks, label="x", score=0.5, probs={"x": 0.5, "y": 0.5})
    out = np.asarray(draw_faces(img, [face]))
    for (x, y), colour in zip(marks.astype(int), LANDMARK_COLOURS):
        assert tuple(out[y, x]) == colour
    assert tuple(out[50 + 60, 50]) == (0, 255, 0)  # the box


def test_predict_writes_scores_landmarks_and_the_detector(tmp_path, capsys):
    photo, face = astronaut()
    path = tmp_path / "astronaut.png"
    Image.fromarray(photo).save(path)
    out_json, out_csv = tmp_path / "o.json", tmp_path / "o.csv"
    argv = ["predict", str(path), "--allow-random", "--quiet", "--image-size", "64", "--device", "cpu"]
    assert main([*argv, "--json", str(out_json), "--csv", str(out_csv), "--detect-threshold", "0.6"]) == 0
    doc = json.loads(out_json.read_text())
    assert doc["detector"] == "yunet-s" and doc["aligned"] is True
    (found,) = doc["results"][0]["faces"]
    assert 0.6 <= found["detection_score"] <= 1
    assert list(found["landmarks"]) == ["right_eye", "left_eye", "nose", "mouth_right", "mouth_left"]
    np.testing.assert_allclose([found["landmarks"]["right_eye"], found["landmarks"]["left_eye"]], ASTRONAUT_EYES,
                               atol=6)
    (row,) = csv.DictReader(out_csv.open())
    assert row["detector"] == "yunet-s" and float(row["detection_score"]) == found["detection_score"]
    assert [float(row["left_eye_x"]), float(row["left_eye_y"])] == found["landmarks"]["left_eye"]
    capsys.readouterr()
    assert main([*argv, "--json", str(out_json), "--no-align", "--force"]) == 0
    assert json.loads(out_json.read_text())["aligned"] is False
    assert main([*argv, "--json", str(out_json), "--min-face", "300", "--force"]) == 1  # no face that large
    assert "no face found by the yunet-s detector" in json.loads(out_json.read_text())["results"][0]["error"]
    for option, value in (("--detect-threshold", "0"), ("--detect-threshold", "1.5"), ("--min-face", "0")):
        capsys.readouterr()
        code, err = run([*argv, option, value], capsys)
        assert code == 2 and err.startswith(f"poster-fast predict: error: argument {option}: expected"), err


def test_detection_in_bgr_and_grey_arrays(detector):
    photo, face = astronaut()
    rgb = detector(photo)
    bgr = detector(np.ascontiguousarray(photo[..., ::-1]), bgr=True)
    assert [d.box for d in rgb] == [d.box for d in bgr]
    (grey,) = detector(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY))
    assert math.hypot(grey.centre[0] - face.cx, grey.centre[1] - face.cy) < 10
    assert isinstance(grey, Detection) and grey.landmarks.shape == (5, 2)
