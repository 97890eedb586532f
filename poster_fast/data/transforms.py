"""The transforms of training and evaluation, without torchvision: they reproduce torchvision's
Resize (PIL bilinear), RandomHorizontalFlip, ToTensor, Normalize and RandomErasing. The random
ones draw from the generator they are given (torch's global one without): training gives each
image a generator of its own (data.sampler.Draw)."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ToNormalizedTensor:
    """Resize((size, size)) with PIL bilinear (as torchvision on PIL), ToTensor, Normalize."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.mean = np.array(IMAGENET_MEAN, dtype=np.float32)
        self.std = np.array(IMAGENET_STD, dtype=np.float32)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self.normalize(np.asarray(img.resize((self.size, self.size), Image.BILINEAR), dtype=np.uint8))

    def normalize(self, rgb: np.ndarray) -> torch.Tensor:
        """An H x W x 3 uint8 RGB array -> (3, H, W) float32, ToTensor then Normalize (in numpy,
        so that no torch thread pool starts in the threads that prepare crops)."""
        x = (rgb.astype(np.float32) / np.float32(255.0) - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


class RandomErasing:
    """torchvision.transforms.RandomErasing(p, scale, ratio=(0.3, 3.3), value=0)."""

    def __init__(self, p: float, scale: tuple[float, float],
                 ratio: tuple[float, float] = (0.3, 3.3)) -> None:
        self.p, self.scale = p, scale
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if torch.rand(1, generator=generator).item() >= self.p:
            return x
        _, h_img, w_img = x.shape
        for _ in range(10):
            area = h_img * w_img * torch.empty(1).uniform_(*self.scale, generator=generator).item()
            aspect = math.exp(torch.empty(1).uniform_(*self.log_ratio, generator=generator).item())
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if h < h_img and w < w_img:
                i = int(torch.randint(0, h_img - h + 1, (1,), generator=generator).item())
                j = int(torch.randint(0, w_img - w + 1, (1,), generator=generator).item())
                x = x.clone()
                x[:, i:i + h, j:j + w] = 0.0
                return x
        return x


class TrainTransform:
    """Resize -> RandomHorizontalFlip -> ToTensor -> Normalize -> RandomErasing (the authors' recipe)."""

    def __init__(self, size: int, erase_p: float, erase_scale: tuple[float, float]) -> None:
        self.to_tensor = ToNormalizedTensor(size)
        self.erase = RandomErasing(erase_p, erase_scale)

    def __call__(self, img: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        if torch.rand(1, generator=generator).item() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return self.erase(self.to_tensor(img), generator)
