"""A trained model ready for inference: loaded, on its device, in eval mode, with the names of
its outputs. `poster-fast predict` and `poster-fast evaluate` both load their model here."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..checkpoint import load_trained
from ..data.labels import class_names, get_recipe
from ..device import default_device


@dataclass
class Classifier:
    model: nn.Module
    classes: list[str]
    device: torch.device
    recorded: dict[str, Any] = field(default_factory=dict)  # the checkpoint's metadata, if any

    @torch.inference_mode()
    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, classes) softmax probabilities, float32 on the CPU."""
        return self.model(batch.to(self.device)).float().softmax(dim=1).cpu()


def load_classifier(checkpoint: str | os.PathLike, *, trusted: bool = False, attn_backend: str = "auto",
                    device: str | None = None, dataset: str | None = None,
                    classes: Sequence[str] | None = None,
                    folders: Sequence[str] | None = None) -> Classifier:
    """The model in `checkpoint`, named by data.labels.class_names (`folders`: the class folders
    of a split it will be evaluated on)."""
    model, recorded = load_trained(checkpoint, trusted, attn_backend)
    if dataset and not classes and recorded.get("dataset") not in (None, dataset):
        print(f"warning: the checkpoint was trained on {recorded['dataset']}, labelling as {dataset}",
              file=sys.stderr)
    names = class_names(model.num_classes, recorded, dataset, classes, folders)
    dev = default_device(device)
    return Classifier(model.to(dev).eval(), names, dev, recorded)


def random_classifier(*, attn_backend: str = "auto", device: str | None = None,
                      dataset: str | None = None, classes: Sequence[str] | None = None) -> Classifier:
    """An untrained model (its labels mean nothing: smoke tests), sized for `classes`, else for
    `dataset`'s classes, else RAF-DB's."""
    from ..model import POSTERV2

    names = list(classes) if classes else list(get_recipe(dataset or "rafdb").classes)
    dev = default_device(device)
    return Classifier(POSTERV2(len(names), attn_backend=attn_backend).to(dev).eval(), names, dev)
