"""Datasets, transforms and face cropping for `poster-fast train | evaluate | predict`.

Everything here works without torchvision: images are read with PIL, transforms are small
callables that reproduce torchvision's Resize (PIL bilinear), RandomHorizontalFlip,
ToTensor, Normalize and RandomErasing, and `ImageFolder` scans `<split>/<class>/<image>`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataError(ValueError):
    """A data folder, image file or class mapping that cannot be used (message says why)."""


@dataclass(frozen=True)
class DatasetRecipe:
    """One dataset's label convention and the authors' training recipe for it (SPEC §8)."""

    name: str
    folders: tuple[str, ...]  # expected class folder names = official labels, sorted order
    classes: tuple[str, ...]  # class name of each folder, same order (= ImageFolder index)
    lr: float
    erase_p: float
    erase_scale: tuple[float, float]
    balanced: bool  # class-balanced sampler (torchsampler.ImbalancedDatasetSampler upstream)


_AFFECTNET = ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt")
_CAERS = ("Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")

DATASETS: dict[str, DatasetRecipe] = {
    "rafdb": DatasetRecipe(
        "rafdb", tuple("1234567"),
        ("Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral"),
        lr=3.5e-5, erase_p=0.5, erase_scale=(0.02, 0.1), balanced=False),
    "affectnet7": DatasetRecipe(
        "affectnet7", tuple("0123456"), _AFFECTNET[:7],
        lr=1e-6, erase_p=1.0, erase_scale=(0.05, 0.05), balanced=True),
    "affectnet8": DatasetRecipe(
        "affectnet8", tuple("01234567"), _AFFECTNET,
        lr=1e-6, erase_p=1.0, erase_scale=(0.05, 0.05), balanced=True),
    # CAER-S ships folders named by emotion; numeric folders 0..6 are taken in this order.
    "caers": DatasetRecipe(
        "caers", _CAERS, _CAERS,
        lr=4e-5, erase_p=1.0, erase_scale=(0.05, 0.05), balanced=False),
}


def get_recipe(name: str) -> DatasetRecipe:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None


def label_table(name: str) -> str:
    """'index -> folder -> class' lines, for help texts and error messages."""
    r = get_recipe(name)
    return ", ".join(f"{i}: folder {f} = {c}" for i, (f, c) in enumerate(zip(r.folders, r.classes)))


def resolve_classes(dataset: str, folders: Sequence[str],
                    override: Sequence[str] | None = None) -> list[str]:
    """Class names for ImageFolder indices given the class folders found (sorted).

    The dataset's official numbering must match the folder names exactly, so that a
    0-based copy of RAF-DB (or any other relabelling) is refused instead of silently
    mislabelled; `override` names the classes explicitly instead.
    """
    if override:
        if len(override) != len(folders):
            raise DataError(f"--classes gives {len(override)} names but there are "
                            f"{len(folders)} class folders ({', '.join(folders)})")
        return list(override)
    r = get_recipe(dataset)
    if dataset == "caers":
        lower = [f.lower() for f in folders]
        if lower == [c.lower() for c in r.classes]:
            return list(r.classes)
        if list(folders) == [str(i) for i in range(len(r.classes))]:
            return list(r.classes)
    elif list(folders) == list(r.folders):
        return list(r.classes)
    raise DataError(
        f"class folders {', '.join(folders)} do not match the {dataset} label numbering "
        f"({label_table(dataset)}); rename the folders or name the classes with --classes")


# ----------------------------------------------------------------------------- images


def load_image(path: str | os.PathLike) -> Image.Image:
    """Any PIL-readable file as 8-bit RGB: EXIF rotation applied, alpha composited on
    white, 16-bit and float images rescaled. Raises DataError naming the file."""
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            img.load()
    except Exception as err:  # PIL raises many types (UnidentifiedImageError, OSError, ...)
        raise DataError(f"cannot read image {path}: {err}") from None
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img).astype(np.float64)
        top = 1.0 if img.mode == "F" and arr.max() <= 1.0 else (255.0 if arr.max() <= 255 else 65535.0)
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(base, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


class ToNormalizedTensor:
    """Resize((size, size)) with PIL bilinear (as torchvision on PIL), ToTensor, Normalize."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = img.resize((self.size, self.size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
        return (x.float().div_(255.0) - self.mean) / self.std


class RandomErasing:
    """torchvision.transforms.RandomErasing(p, scale, ratio=(0.3, 3.3), value=0)."""

    def __init__(self, p: float, scale: tuple[float, float],
                 ratio: tuple[float, float] = (0.3, 3.3)) -> None:
        self.p, self.scale = p, scale
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if torch.rand(1).item() >= self.p:
            return x
        _, h_img, w_img = x.shape
        for _ in range(10):
            area = h_img * w_img * torch.empty(1).uniform_(*self.scale).item()
            aspect = math.exp(torch.empty(1).uniform_(*self.log_ratio).item())
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if h < h_img and w < w_img:
                i = int(torch.randint(0, h_img - h + 1, (1,)).item())
                j = int(torch.randint(0, w_img - w + 1, (1,)).item())
                x = x.clone()
                x[:, i:i + h, j:j + w] = 0.0
                return x
        return x


class TrainTransform:
    """Resize -> RandomHorizontalFlip -> ToTensor -> Normalize -> RandomErasing (SPEC §8)."""

    def __init__(self, size: int, erase_p: float, erase_scale: tuple[float, float]) -> None:
        self.to_tensor = ToNormalizedTensor(size)
        self.erase = RandomErasing(erase_p, erase_scale)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        if torch.rand(1).item() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return self.erase(self.to_tensor(img))


# ----------------------------------------------------------------------------- folders


def iter_images(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith("."):
                yield Path(root) / name


class ImageFolder(torch.utils.data.Dataset):
    """`root/<class>/**/<image>` with classes in sorted folder order, like torchvision's."""

    def __init__(self, root: str | os.PathLike,
                 transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.root = Path(root)
        self.transform = transform
        if not self.root.is_dir():
            raise DataError(f"{self.root} is not a folder")
        self.folders = sorted(p.name for p in self.root.iterdir()
                              if p.is_dir() and not p.name.startswith("."))
        if not self.folders:
            raise DataError(f"{self.root} has no class folders; expected {self.root}/<class>/<image>")
        self.samples: list[tuple[str, int]] = []
        empty = []
        for idx, name in enumerate(self.folders):
            files = [(str(p), idx) for p in iter_images(self.root / name)]
            if not files:
                empty.append(name)
            self.samples += files
        if empty:
            raise DataError(f"class folder(s) with no images ({', '.join(IMAGE_EXTENSIONS)}) "
                            f"in {self.root}: {', '.join(empty)}")
        self.targets = [t for _, t in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, target = self.samples[i]
        return self.transform(load_image(path)), target


def split_dir(data: str | os.PathLike, split: str) -> Path:
    """`DATA/<split>`, or a DataError that names the expected layout."""
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    path = root / split
    if not path.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DataError(
            f"{path} is missing: expected the ImageFolder layout {root}/train/<class>/<image> "
            f"and {root}/valid/<class>/<image> (folders found: {', '.join(found) or 'none'})")
    return path


class BalancedSampler(torch.utils.data.Sampler[int]):
    """Class-balanced sampling with replacement (weight 1/class count, len(dataset) draws
    per epoch, as torchsampler.ImbalancedDatasetSampler), sharded across DDP ranks."""

    def __init__(self, targets: Sequence[int], num_replicas: int = 1, rank: int = 0,
                 seed: int = 0) -> None:
        counts = np.bincount(np.asarray(targets))
        self.weights = torch.as_tensor(1.0 / counts[np.asarray(targets)], dtype=torch.double)
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        self.num_samples = math.ceil(len(targets) / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)  # same draw on every rank
        idx = torch.multinomial(self.weights, self.num_samples * self.num_replicas, True, generator=g)
        return iter(idx[self.rank::self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples


# ----------------------------------------------------------------------------- faces


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int


class FaceDetector:
    """Frontal-face cascade that ships with the installed packages (no download):
    OpenCV's Haar cascade where cv2 has one (opencv 4.x), else OpenCV's LBP frontal-face
    cascade as bundled and run by scikit-image (opencv 5 dropped CascadeClassifier).

    Images are searched at most `max_side` pixels wide; faces smaller than half the side
    of the largest face found are dropped (cascade false positives are mostly small).
    """

    def __init__(self, max_side: int = 640, min_size: int = 24, relative_min: float = 0.5) -> None:
        self.max_side, self.min_size, self.relative_min = max_side, min_size, relative_min
        self._cv2 = None
        self._sk = None
        try:
            import cv2

            xml = Path(getattr(getattr(cv2, "data", None), "haarcascades", "")) / \
                "haarcascade_frontalface_default.xml"
            if hasattr(cv2, "CascadeClassifier") and xml.is_file():
                self._cv2 = cv2.CascadeClassifier(str(xml))
        except ImportError:
            pass
        if self._cv2 is None:
            from skimage import data, feature

            self._sk = feature.Cascade(data.lbp_frontal_face_cascade_filename())
        self.name = "opencv-haar" if self._cv2 is not None else "opencv-lbp (scikit-image)"

    def __call__(self, img: Image.Image) -> list[Box]:
        scale = min(1.0, self.max_side / max(img.size))
        small = img if scale == 1.0 else img.resize(
            (max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
        gray = np.asarray(small.convert("L"))
        if self._cv2 is not None:
            found = [tuple(int(v) for v in b) for b in self._cv2.detectMultiScale(
                gray, scaleFactor=1.1, minNeighbors=5, minSize=(self.min_size, self.min_size))]
        else:
            found = [(d["c"], d["r"], d["width"], d["height"]) for d in self._sk.detect_multi_scale(
                img=gray, scale_factor=1.1, step_ratio=1, min_size=(self.min_size, self.min_size),
                max_size=gray.shape, min_neighbor_number=8)]
        if not found:
            return []
        largest = max(max(w, h) for _, _, w, h in found)
        boxes = [Box(round(x / scale), round(y / scale), round(w / scale), round(h / scale))
                 for x, y, w, h in found if max(w, h) >= self.relative_min * largest]
        return sorted(boxes, key=lambda b: (b.x, b.y))


def crop_face(img: Image.Image, box: Box, margin: float) -> tuple[Image.Image, Box]:
    """Square crop around `box` enlarged by `margin` of its size on each side, clipped to
    the image; returns the crop and the box actually cropped."""
    side = max(box.w, box.h) * (1 + 2 * margin)
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    x0, y0 = max(0, round(cx - side / 2)), max(0, round(cy - side / 2))
    x1, y1 = min(img.width, round(cx + side / 2)), min(img.height, round(cy + side / 2))
    return img.crop((x0, y0, x1, y1)), Box(x0, y0, x1 - x0, y1 - y0)
