"""The accuracy cost of each inference precision: the logits of the model that predict and
evaluate run (`optimize(model, "inference", dtype)`) against the plain float32 model's, on a
fixed set of inputs: scikit-image's sample photographs (four scenes, four LFW faces) through the
preprocessing of `poster-fast predict --no-detect`, and seeded Gaussian images.

The weights are random, at the scale of a trained network, with BatchNorm statistics measured on
those inputs: with random statistics instead, the BatchNorm shifts swamp the signal and the
landmark queries come out the same for every image, so a precision's error would be measured on
a model that ignores its input. Here every stage's output, and the class chosen, depends on it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..model import POSTERV2

PHOTOS = ("astronaut", "chelsea", "coffee", "camera")  # scikit-image sample data, shipped with it
FACES = 4  # the first faces of skimage.data.lfw_subset() (25x25 grey crops)
# Unit roundoff (half the spacing of numbers in [1, 2)) of each inference dtype: 8, 11 and 24
# significand bits.
UNIT_ROUNDOFF = {"fp32": 2.0 ** -24, "bf16": 2.0 ** -8, "fp16": 2.0 ** -11}


def _rgb(image: np.ndarray):
    from PIL import Image

    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return Image.fromarray(image[..., :3])


def sample_inputs(random_images: int = 4, photos: bool = True, size: int = 224,
                  seed: int = 1) -> tuple[torch.Tensor, list[str]]:
    """(N, 3, size, size) normalised images and their names: the sample photos and faces (needs
    scikit-image) as `ToNormalizedTensor` makes them, then `random_images` seeded N(0, 1) images."""
    from ..data.transforms import ToNormalizedTensor

    images, names = [], []
    if photos:
        import skimage.data

        to_tensor = ToNormalizedTensor(size)
        images += [to_tensor(_rgb(getattr(skimage.data, n)())) for n in PHOTOS]
        images += [to_tensor(_rgb(face)) for face in skimage.data.lfw_subset()[:FACES]]
        names += list(PHOTOS) + [f"lfw{i}" for i in range(FACES)]
    gen = torch.Generator().manual_seed(seed)
    images += list(torch.randn(random_images, 3, size, size, generator=gen))
    names += [f"gaussian{i}" for i in range(random_images)]
    return torch.stack(images), names


@torch.no_grad()
def calibrated_model(inputs: torch.Tensor, num_classes: int = 7, seed: int = 0) -> POSTERV2:
    """A random POSTERV2 (float32, eval mode, reference attention) whose stages all matter:
    linear weights N(0, 1/fan_in), BatchNorm and LayerNorm affine N(1, 0.2) / N(0, 0.2), layer
    scales N(0, 0.5), position-bias tables N(0, 1), and BatchNorm running statistics measured on
    `inputs` (one pass in training mode, the frozen landmark net included)."""
    torch.manual_seed(seed)
    model = POSTERV2(num_classes, attn_backend="reference")
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.weight.normal_(0, 1 / math.sqrt(m.in_features))
            m.bias.normal_(0, 0.1)
        if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
            m.weight.normal_(1, 0.2)
            m.bias.normal_(0, 0.2)
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: one pass sets the batch's statistics
    for name, p in model.named_parameters():
        if "relative_position_bias_table" in name:
            p.normal_(0, 1)
        elif "gamma" in name:
            p.normal_(0, 0.5)
    model.train()
    model.face_landback.train()
    model(inputs)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    return model.eval()


@dataclass
class PrecisionError:
    """One precision's logits against the plain float32 model's, over the same inputs."""

    precision: str
    max_rel_err: float  # max |logits - fp32 logits| / max |fp32 logits|
    rms_rel_err: float  # root mean square error / max |fp32 logits|
    argmax_agree: int  # inputs whose top class is fp32's
    inputs: int
    min_margin: float  # the smallest fp32 top-1 minus top-2 logit gap, / max |fp32 logits|

    @property
    def in_unit_roundoffs(self) -> float:
        """max_rel_err in units of the precision's unit roundoff."""
        return self.max_rel_err / UNIT_ROUNDOFF[self.precision]


def compare(logits: torch.Tensor, fp32: torch.Tensor, precision: str) -> PrecisionError:
    """The error of `logits` against the plain float32 model's `fp32` logits."""
    logits, fp32 = logits.double().cpu(), fp32.double().cpu()
    scale = fp32.abs().max()
    top2 = fp32.topk(2, dim=1).values
    return PrecisionError(
        precision, float((logits - fp32).abs().max() / scale), float((logits - fp32).pow(2).mean().sqrt() / scale),
        int((logits.argmax(1) == fp32.argmax(1)).sum()), len(fp32), float((top2[:, 0] - top2[:, 1]).min() / scale))


@torch.no_grad()
def precision_errors(model: POSTERV2, inputs: torch.Tensor, precisions: tuple[str, ...] = ("fp32", "bf16", "fp16"),
                     device: str | torch.device = "cpu", attn_backend: str = "auto",
                     batch: int = 8) -> list[PrecisionError]:
    """Per precision, the error of the model predict runs (inference.classifier.prepare_for_inference)
    against the plain float32 `model` with reference attention, both on `device`."""
    from ..inference.classifier import prepare_for_inference

    device = torch.device(device)
    model = model.to(device).eval()

    def run(m: nn.Module) -> torch.Tensor:
        return torch.cat([m(x.to(device)).float().cpu() for x in inputs.split(batch)])

    kept, model.attn_backend = model.attn_backend, "reference"
    try:
        fp32 = run(model)
    finally:
        model.attn_backend = kept
    return [compare(run(prepare_for_inference(model, device, p, attn_backend=attn_backend)[0]), fp32, p)
            for p in precisions]
