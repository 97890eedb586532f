"""A trained model ready for inference: loaded, prepared for its device and precision, with the
names of its outputs. `poster-fast predict` and `poster-fast evaluate` both load their model here,
and `prepare_for_inference` is the one place where a POSTERV2 becomes the model they run."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..data.labels import class_names, get_recipe
from ..device import Hardware, Precision, choose_precision, default_device, hardware
from ..model import POSTERV2


@dataclass
class Classifier:
    model: nn.Module  # as prepare_for_inference made it
    classes: list[str]
    device: torch.device
    precision: Precision
    compiled: bool
    recorded: dict[str, Any] = field(default_factory=dict)  # the checkpoint's metadata, if any

    @property
    def run_info(self) -> dict[str, Any]:
        """How the model runs, for the outputs: precision, why it was chosen, compiled or not."""
        return {"precision": self.precision.name, "precision_reason": self.precision.reason,
                "compiled": self.compiled}

    def describe(self) -> str:
        """One line for stderr."""
        return f"model on {self.device}, precision {self.precision}{', compiled' if self.compiled else ''}"

    @torch.inference_mode()
    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, classes) softmax probabilities, float32 on the CPU."""
        return self.model(batch.to(self.device)).float().softmax(dim=1).cpu()


def inference_options(hw: Hardware, precision: str = "auto", compile: bool = False) -> tuple[Precision, dict[str, Any]]:
    """What `prepare_for_inference` does on hardware `hw`: the precision chosen (device.choose_precision)
    and the keyword arguments of `poster_fast.optimize`: weights in that precision; `compile`:
    torch.compile, on CUDA with CUDA graphs (mode "reduce-overhead"), on the CPU with Inductor's freezing."""
    chosen = choose_precision(precision, hw)
    cuda = hw.device_type == "cuda"
    return chosen, {"mode": "inference", "dtype": chosen.dtype, "compile": compile and not cuda,
                    "cuda_graphs": compile and cuda}


def prepare_for_inference(model: POSTERV2, device: torch.device, precision: str = "auto",
                          compile: bool = False, attn_backend: str | None = None) -> tuple[nn.Module, Precision]:
    """`model` as predict and evaluate run it on `device`: `poster_fast.optimize` in inference
    mode (BatchNorm folded, channels-last, weights held in the chosen precision, logits in
    float32) with the options `inference_options` gives for the device ("auto": bf16 where the
    device computes it natively, else fp32). `model` is moved to `device` and put in eval mode.

    Args:
        model: a POSTERV2.
        device: where it runs.
        precision: "auto", "fp32", "bf16" or "fp16".
        compile: torch.compile it (CUDA graphs on CUDA, Inductor's freezing on the CPU).
        attn_backend: the W-MCSA backend (default: the model's).

    Returns:
        (the model to run, the precision chosen and why).
    """
    from ..optimize import optimize

    chosen, options = inference_options(hardware(device), precision, compile)
    model = model.to(device).eval()
    return optimize(model, attn_backend=attn_backend or model.attn_backend, **options), chosen


def _classifier(model: POSTERV2, names: list[str], device: str | None, precision: str, compile: bool,
                recorded: dict[str, Any]) -> Classifier:
    dev = default_device(device)
    fast, chosen = prepare_for_inference(model, dev, precision, compile)
    return Classifier(fast, names, dev, chosen, compile, recorded)


def load_classifier(checkpoint: str | os.PathLike, *, trusted: bool = False, attn_backend: str = "auto",
                    device: str | None = None, dataset: str | None = None,
                    classes: Sequence[str] | None = None, folders: Sequence[str] | None = None,
                    precision: str = "auto", compile: bool = False) -> Classifier:
    """The model in a file, ready for inference.

    Args:
        checkpoint: any file POSTERV2.load_trained reads.
        trusted: allow files that pickle Python objects besides tensors.
        attn_backend, device, precision, compile: how it runs (`prepare_for_inference`).
        dataset, classes: name its outputs (data.labels.class_names: `classes`, else
            `dataset`'s table, else the names the file records, else its dataset's table).
        folders: the class folders of a split it will be evaluated on (checked against the names).

    Returns:
        The Classifier: the prepared model, its class names, device, precision and the file's metadata.
    """
    model, recorded = POSTERV2.load_trained(checkpoint, trusted, attn_backend)
    if dataset and not classes and recorded.get("dataset") not in (None, dataset):
        print(f"warning: the checkpoint was trained on {recorded['dataset']}, labelling as {dataset}",
              file=sys.stderr)
    names = class_names(model.num_classes, recorded, dataset, classes, folders)
    return _classifier(model, names, device, precision, compile, recorded)


def pretrained_classifier(source: str | os.PathLike, *, attn_backend: str = "auto", device: str | None = None,
                          dataset: str | None = None, classes: Sequence[str] | None = None,
                          precision: str = "auto", compile: bool = False) -> Classifier:
    """The model in a save_pretrained folder or a Hugging Face Hub repository (POSTERV2.from_pretrained),
    ready for inference; its outputs named as load_classifier names them (`classes`, else `dataset`'s
    table, else the folder's config)."""
    model = POSTERV2.from_pretrained(source, attn_backend=attn_backend)
    config = dict(getattr(model, "config", {}))
    names = class_names(model.num_classes, config, dataset, classes)
    return _classifier(model, names, device, precision, compile, config)


def random_classifier(*, attn_backend: str = "auto", device: str | None = None,
                      dataset: str | None = None, classes: Sequence[str] | None = None,
                      precision: str = "auto", compile: bool = False) -> Classifier:
    """An untrained model (its labels mean nothing: smoke tests), sized for `classes`, else for
    `dataset`'s classes, else RAF-DB's."""
    names = list(classes) if classes else list(get_recipe(dataset or "rafdb").classes)
    return _classifier(POSTERV2(len(names), attn_backend=attn_backend), names, device, precision, compile, {})
