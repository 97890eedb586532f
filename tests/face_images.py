"""Face detection test images, built from what ships with scikit-image and OpenCV (nothing
downloaded), with the true faces: scikit-image's astronaut (one face, eyes known) and the first
100 patches of `skimage.data.lfw_subset()` (25x25 grey face crops), tilted in plane, shrunk to
about 22 px, in grey, several to a photo; and photos without a face (textures, animals, text,
objects, scientific images, text drawn with OpenCV).

`face_images()` returns the cases; `score(cases, detect)` matches a detector's faces to the true
ones. A detection matches a true face when its centre lies within half the face's size of the
true centre and its size is within a factor 2 of the true size (size: the square root of the box's
area); each true face takes at most one detection, the nearest. Not collected by pytest.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

cv2 = __import__("pytest").importorskip("cv2")
skdata = __import__("pytest").importorskip("skimage.data")

# The astronaut's face (skimage.data.astronaut(), 512x512): centre, size, and the eyes' centres
# (the person's right eye first, as YuNet's landmarks), read off the photo.
ASTRONAUT_CENTRE, ASTRONAUT_SIZE = (223.5, 120.0), 101.0
ASTRONAUT_EYES = ((202.0, 103.0), (247.0, 103.5))
KINDS = ("upright", "tilt", "small", "gray", "two", "none")


@dataclass(frozen=True)
class TrueFace:
    cx: float
    cy: float
    size: float  # about brow to chin
    eyes: tuple[tuple[float, float], tuple[float, float]] | None = None  # right eye, left eye
    tilt: float = 0.0  # in-plane rotation, degrees, counter-clockwise as seen


@dataclass
class Case:
    name: str
    kind: str  # one of KINDS
    image: np.ndarray  # H x W x 3 uint8 RGB
    faces: list[TrueFace] = field(default_factory=list)


def astronaut() -> tuple[np.ndarray, TrueFace]:
    return skdata.astronaut(), TrueFace(*ASTRONAUT_CENTRE, ASTRONAUT_SIZE, ASTRONAUT_EYES)


def lfw_face(i: int, side: int) -> tuple[np.ndarray, TrueFace]:
    """LFW face patch `i` (0-99) as RGB, `side` pixels square; the patch spans the face."""
    patch = (skdata.lfw_subset()[i] * 255).round().astype(np.uint8)
    grey = cv2.resize(patch, (side, side), interpolation=cv2.INTER_CUBIC)
    return np.repeat(grey[..., None], 3, axis=2), TrueFace(side / 2, side / 2, side)


def moved(face: TrueFace, matrix: np.ndarray, tilt: float = 0.0) -> TrueFace:
    """`face` under the 2x3 similarity `matrix` (and its tilt added)."""
    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    point = lambda p: tuple(float(v) for v in matrix @ np.array([p[0], p[1], 1.0]))
    eyes = None if face.eyes is None else (point(face.eyes[0]), point(face.eyes[1]))
    return TrueFace(*point((face.cx, face.cy)), face.size * scale, eyes, face.tilt + tilt)


def rotate(image: np.ndarray, faces: list[TrueFace], degrees: float) -> tuple[np.ndarray, list[TrueFace]]:
    """Counter-clockwise by `degrees` about the centre, the canvas grown to hold it all (black)."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    c, s = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = round(w * c + h * s), round(w * s + h * c)
    m[:, 2] += (nw - w) / 2, (nh - h) / 2
    out = cv2.warpAffine(image, m, (nw, nh), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    return out, [moved(f, m, degrees) for f in faces]


def background(width: int, height: int, seed: int, texture: str | None = None) -> np.ndarray:
    """A plain grey, noisy canvas, or a scikit-image texture tiled to size, as RGB."""
    rng = np.random.default_rng(seed)
    if texture is None:
        base = rng.normal(128, 12, (height, width)).clip(0, 255).astype(np.uint8)
    else:
        tile = getattr(skdata, texture)()
        base = np.tile(tile, (height // tile.shape[0] + 1, width // tile.shape[1] + 1))[:height, :width]
    return np.repeat(base[..., None], 3, axis=2).copy()


def paste(canvas: np.ndarray, faces: list[TrueFace], image: np.ndarray, image_faces: list[TrueFace],
          x: int, y: int) -> None:
    h, w = image.shape[:2]
    canvas[y:y + h, x:x + w] = image
    faces += [moved(f, np.array([[1.0, 0, x], [0, 1.0, y]])) for f in image_faces]


def scaled(image: np.ndarray, faces: list[TrueFace], factor: float) -> tuple[np.ndarray, list[TrueFace]]:
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    out = cv2.resize(image, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)
    m = np.array([[size[0] / w, 0, 0], [0, size[1] / h, 0]])
    return out, [moved(f, m) for f in faces]


def lfw_group(indices: Sequence[int], side: int, columns: int, gap: int, seed: int,
              tilts: Sequence[float] = (), texture: str | None = None) -> tuple[np.ndarray, list[TrueFace]]:
    """LFW faces on one canvas, `columns` to a row, each `side` px (rotated by `tilts`, in turn)."""
    tiles = []
    for k, i in enumerate(indices):
        img, face = lfw_face(i, side)
        if tilts:
            img, (face,) = rotate(img, [face], tilts[k % len(tilts)])
        tiles.append((img, face))
    cell = max(max(t.shape[:2]) for t, _ in tiles) + gap
    rows = math.ceil(len(tiles) / columns)
    canvas = background(columns * cell + gap, rows * cell + gap, seed, texture)
    faces: list[TrueFace] = []
    for k, (img, face) in enumerate(tiles):
        h, w = img.shape[:2]
        x = gap + (k % columns) * cell + (cell - gap - w) // 2
        y = gap + (k // columns) * cell + (cell - gap - h) // 2
        if tilts:  # only the rotated patch, not its black corners
            mask = rotate(np.full((side, side, 3), 255, np.uint8), [], tilts[k % len(tilts)])[0] > 127
            region = canvas[y:y + h, x:x + w]
            canvas[y:y + h, x:x + w] = np.where(mask, img, region)
            faces.append(moved(face, np.array([[1.0, 0, x], [0, 1.0, y]])))
        else:
            paste(canvas, faces, img, [face], x, y)
    return canvas, faces


def drawn_text(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    page = np.full((480, 640, 3), 245, np.uint8)
    words = "the quick brown fox jumps over a lazy dog while poster reads faces 0123456789".split()
    for row in range(12):
        line = " ".join(rng.choice(words, 5))
        cv2.putText(page, line, (12, 34 + 37 * row), int(rng.integers(0, 8)), 0.9, (20, 20, 20), 2, cv2.LINE_AA)
    return page


def rgb(grey: np.ndarray) -> np.ndarray:
    grey = grey.astype(np.uint8) * (255 if grey.dtype == bool else 1)
    return np.repeat(grey[..., None], 3, axis=2) if grey.ndim == 2 else grey[..., :3].copy()


def face_images() -> list[Case]:
    cases: list[Case] = []
    photo, face = astronaut()
    cases.append(Case("astronaut", "upright", photo, [face]))
    cases.append(Case("lfw 4x4 at 80 px", "upright", *lfw_group(range(0, 16), 80, 4, 30, 1)))
    cases.append(Case("lfw 3x3 at 120 px on gravel", "upright",
                      *lfw_group(range(16, 25), 120, 3, 40, 2, texture="gravel")))
    for degrees in (-45, -30, -15, 15, 30, 45):
        cases.append(Case(f"astronaut tilted {degrees}", "tilt", *rotate(photo, [face], degrees)))
    cases.append(Case("lfw tilted +-30 +-45", "tilt",
                      *lfw_group(range(25, 37), 96, 4, 40, 3, tilts=(30, -45, -30, 45))))
    for target in (22, 26, 32):
        small, faces = scaled(photo, [face], target / ASTRONAUT_SIZE)
        canvas, placed = background(640, 480, target), []
        paste(canvas, placed, small, faces, 300 - target, 200)
        cases.append(Case(f"astronaut face {target} px in 640x480", "small", canvas, placed))
    cases.append(Case("lfw at 22-30 px", "small", *lfw_group(range(37, 57), 22, 5, 40, 4)))
    cases.append(Case("lfw at 30 px on brick", "small", *lfw_group(range(57, 69), 30, 4, 36, 5, texture="brick")))
    grey = rgb(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY))
    cases.append(Case("astronaut grey", "gray", grey, [face]))
    cases.append(Case("astronaut grey tilted 30", "gray", *rotate(grey, [face], 30)))
    small, faces = scaled(grey, [face], 28 / ASTRONAUT_SIZE)
    canvas, placed = background(320, 240, 9), []
    paste(canvas, placed, small, faces, 100, 60)
    cases.append(Case("astronaut grey face 28 px", "gray", canvas, placed))
    mirrored = [TrueFace(photo.shape[1] - face.cx, face.cy, face.size, tuple((photo.shape[1] - x, y)
                                                                               for x, y in face.eyes[::-1]))]
    canvas, placed = np.zeros((512, 1024, 3), np.uint8), []
    paste(canvas, placed, photo, [face], 0, 0)
    paste(canvas, placed, np.ascontiguousarray(photo[:, ::-1]), mirrored, 512, 0)
    cases.append(Case("astronaut and mirror", "two", canvas, placed))
    half, half_faces = scaled(photo, [face], 0.5)
    canvas, placed = background(800, 520, 11), []
    paste(canvas, placed, photo, [face], 0, 4)
    paste(canvas, placed, half, half_faces, 540, 200)
    cases.append(Case("astronaut at two sizes", "two", canvas, placed))
    cases.append(Case("two lfw faces", "two", *lfw_group([69, 70], 110, 2, 60, 12)))
    for name in ("brick", "grass", "gravel", "coins", "chelsea", "cat", "coffee", "rocket", "text",
                 "page", "clock", "moon", "hubble_deep_field", "immunohistochemistry", "horse", "checkerboard",
                 "colorwheel", "retina", "cell"):
        cases.append(Case(name, "none", rgb(getattr(skdata, name)())))
    cases.append(Case("text drawn with OpenCV", "none", drawn_text(13)))
    return cases


@dataclass
class Score:
    faces: int = 0
    found: int = 0
    false: int = 0
    without_landmarks: int = 0
    missed: list[str] = field(default_factory=list)
    false_in: list[str] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.found / self.faces if self.faces else 1.0


def matches(box: Sequence[float], face: TrueFace) -> bool:
    x, y, w, h = box
    size = math.sqrt(w * h)
    return (math.hypot(x + w / 2 - face.cx, y + h / 2 - face.cy) <= face.size / 2
            and 0.5 <= size / face.size <= 2.0)


def score(cases: list[Case], detect: Callable[[np.ndarray], list[tuple[Sequence[float], object]]]) -> dict[str, Score]:
    """Per kind and "all": true faces, found, false faces. `detect(rgb)` returns (box x, y, w, h;
    landmarks or None) per face."""
    scores = {kind: Score() for kind in (*KINDS, "all")}
    for case in cases:
        found = detect(case.image)
        taken: set[int] = set()
        for k, face in enumerate(case.faces):
            near = [(math.hypot(b[0] + b[2] / 2 - face.cx, b[1] + b[3] / 2 - face.cy), i)
                    for i, (b, _) in enumerate(found) if i not in taken and matches(b, face)]
            for s in (scores[case.kind], scores["all"]):
                s.faces += 1
                if near:
                    s.found += 1
                    s.without_landmarks += found[min(near)[1]][1] is None
                else:
                    s.missed.append(f"{case.name} #{k}")
            if near:
                taken.add(min(near)[1])
        for s in (scores[case.kind], scores["all"]):
            s.false += len(found) - len(taken)
            s.false_in += [case.name] * (len(found) - len(taken))
    return scores
