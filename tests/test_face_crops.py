"""The face crop's geometry pinned with known face boxes: a square of side max(w, h) * (1 + 2 *
margin) centred on the box, clipped to the image (so no longer square at a border); and the crop
that predict feeds the model, with its default margin (0.2), through the API and the command
(axis-aligned: the detector here gives no landmarks; aligned crops: tests/test_faces.py).

The photo encodes each pixel's coordinates in its colour, so a crop shows where it was cut."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from command_utils import FakeClassifier, recognizer
from poster_fast.commands.cli import main
from poster_fast.data.transforms import ToNormalizedTensor
from poster_fast.faces import Box, Detection, crop_face
from poster_fast.inference.predict import predict_files

WIDTH, HEIGHT = 400, 300


def coordinates_photo() -> Image.Image:
    """Red = x, green = y (both < 256 * 2: blue holds their high bits)."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    rgb = np.stack([x % 256, y % 256, (x // 256) * 16 + y // 256], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb)


def where(img: Image.Image, px: int, py: int) -> tuple[int, int]:
    """The photo coordinates of pixel (px, py) of a crop."""
    r, g, b = img.getpixel((px, py))
    return r + 256 * (b // 16), g + 256 * (b % 16)


# face box, margin -> the region cropped (x, y, w, h)
GEOMETRY = [
    (Box(100, 120, 60, 80), 0.2, (74, 104, 112, 112)),  # side 80 * 1.4, centred on (130, 160)
    (Box(100, 120, 60, 80), 0.0, (90, 120, 80, 80)),  # the box's longer side
    (Box(100, 120, 60, 80), 0.5, (50, 80, 160, 160)),
    (Box(150, 100, 90, 50), 0.3, (123, 53, 144, 144)),  # a wide box: the side from its width
    (Box(10, 5, 60, 80), 0.2, (0, 0, 96, 101)),  # clipped at the left and top edges
    (Box(360, 240, 40, 50), 0.2, (345, 230, 55, 70)),  # clipped at the right and bottom edges
    (Box(0, 0, WIDTH, HEIGHT), 0.2, (0, 0, WIDTH, HEIGHT)),  # larger than the photo
]


@pytest.mark.parametrize("box,margin,region", GEOMETRY)
def test_crop_geometry(box, margin, region):
    img = coordinates_photo()
    crop, cropped = crop_face(img, box, margin)
    x, y, w, h = region
    assert cropped == Box(x, y, w, h)
    assert crop.size == (w, h)
    assert where(crop, 0, 0) == (x, y) and where(crop, w - 1, h - 1) == (x + w - 1, y + h - 1)
    inside = 0 < x and 0 < y and x + w < WIDTH and y + h < HEIGHT
    if inside:  # square, centred on the face box
        assert w == h
        assert abs((x + w / 2) - (box.x + box.w / 2)) <= 0.5 and abs((y + h / 2) - (box.y + box.h / 2)) <= 0.5


class KnownFace:
    """A detector that finds one face, at a known box, without landmarks."""

    name = "known"
    landmarks = False

    def __init__(self, box: Box = GEOMETRY[0][0]) -> None:
        self.box = box

    def __call__(self, image: np.ndarray, bgr: bool = False) -> list[Detection]:
        return [Detection(self.box)]


class RecordingClassifier(FakeClassifier):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[torch.Tensor] = []

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        self.batches.append(batch.clone())
        return super().probabilities(batch)


def expected_input(region: tuple[int, int, int, int], size: int) -> torch.Tensor:
    x, y, w, h = region
    return ToNormalizedTensor(size)(coordinates_photo().crop((x, y, x + w, y + h)))


def test_recognizer_crops_feed_the_crop():
    box, margin, region = GEOMETRY[0]
    rec = recognizer(FakeClassifier(), KnownFace(box), margin=margin, image_size=64)
    ((face, tensor),) = rec.crops(np.asarray(coordinates_photo()))
    assert face.box == box  # the outputs report the detector's box; the model sees the crop
    assert torch.equal(tensor, expected_input(region, 64))


def test_predict_files_default_margin(tmp_path):
    path = tmp_path / "coords.png"
    coordinates_photo().save(path)
    classifier = RecordingClassifier()
    (result,) = predict_files([path], recognizer(classifier, KnownFace(), image_size=64), progress=False)
    assert result.faces[0].box == GEOMETRY[0][0]
    assert torch.equal(classifier.batches[0][0], expected_input(GEOMETRY[0][2], 64))


def test_predict_command_default_margin_and_size(tmp_path, monkeypatch):
    path = tmp_path / "coords.png"
    coordinates_photo().save(path)
    classifier = RecordingClassifier()
    monkeypatch.setattr("poster_fast.faces.load_detector", lambda *args, **kwargs: KnownFace())
    monkeypatch.setattr("poster_fast.inference.classifier.random_classifier", lambda **options: classifier)
    assert main(["predict", str(path), "--allow-random", "--quiet", "--json", str(tmp_path / "p.json")]) == 0
    assert torch.equal(classifier.batches[0][0], expected_input(GEOMETRY[0][2], 224))
