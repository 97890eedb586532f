"""Datasets on disk: the split folders DATA/<split>/<class>/<image> and an ImageFolder over them."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from ..errors import DataError
from .images import IMAGE_EXTENSIONS, check_images, iter_images, load_image
from .sampler import Draw


class ImageFolder(torch.utils.data.Dataset):
    """`root/<class>/**/<image>` with classes in sorted folder order, like torchvision's."""

    def __init__(self, root: str | os.PathLike,
                 transform: Callable[..., torch.Tensor]) -> None:
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

    def check_images(self, decode: bool = False) -> None:
        """DataError listing the image files that do not open (`decode`: whose pixels cannot be
        read either), before any of them is loaded for training or evaluation."""
        bad = check_images([p for p, _ in self.samples], decode)
        if bad:
            shown = "; ".join(f"{p} ({why})" for p, why in bad[:5])
            more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise DataError(f"{len(bad)} of the {len(self.samples)} image files in {self.root} cannot be "
                            f"read: {shown}{more}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | Draw) -> tuple[torch.Tensor, int]:
        """Image `key` transformed, and its class; for a Draw (training's samplers), the transform
        draws its randomness from a generator seeded with the draw's seed."""
        if isinstance(key, Draw):
            path, target = self.samples[key.index]
            return self.transform(load_image(path), torch.Generator().manual_seed(key.seed)), target
        path, target = self.samples[key]
        return self.transform(load_image(path)), target


def split_dir(data: str | os.PathLike, split: str) -> Path:
    """`DATA/<split>`, or a DataError that names the expected layout."""
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    path = root / split
    try:
        missing = not path.is_dir()
    except OSError as err:
        raise DataError(f"{path}: {err.strerror or err}") from None
    if missing:
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DataError(
            f"{path} is missing: expected the ImageFolder layout {root}/train/<class>/<image> "
            f"and {root}/valid/<class>/<image> (folders found: {', '.join(found) or 'none'})")
    return path


def check_same_classes(reference: ImageFolder, other: ImageFolder) -> None:
    """Splits must hold the same class folders, or the same index would mean different classes."""
    if other.folders != reference.folders:
        raise DataError(f"class folders differ: {reference.root} has {', '.join(reference.folders)}, "
                        f"{other.root} has {', '.join(other.folders)}")
