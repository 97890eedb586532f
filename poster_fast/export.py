"""A POSTERV2 outside poster_fast as ONNX, checked with onnxruntime before it is written.

`export_onnx` writes the model as it is, its fused W-MCSA op included: the op's ONNX
translation (ops/onnx.py) goes to `torch.onnx.export(dynamo=True)`, so no backend switch is
needed. The batch size is dynamic, the image size fixed at export. Before the file is renamed
into place, onnxruntime runs it on the CPU and `check_onnx` holds its logits to the error policy
of the fused kernels: at most 3x the float32 PyTorch model's error against the float64 model.

safetensors files, save_pretrained folders and their Hub transfers are in hub.py.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from .checks import MIN_OPSET
from .errors import UsageError
from .extras import require
from .files import write_file
from .hub import check_export_file, model_config

ONNX_INPUT, ONNX_OUTPUT = "images", "logits"
# torch.export specialises the sizes 0 and 1, so the model is traced at batch 2 with the batch
# dimension declared dynamic.
TRACE_BATCH = 2
CHECK_BATCHES = (1, 3)
# The fused kernels' policy (tests/wmca_utils.py): 3x the same-dtype reference's error against
# float64, plus 16 float32 ulps of the logits' magnitude (at least 1) for a lucky reference.
POLICY_FACTOR, FLOOR = 3.0, 2.0 ** -20


class OnnxMismatch(RuntimeError):
    """The exported graph's logits are outside the error policy: a translation bug."""


@dataclass(frozen=True)
class OnnxCheck:
    """onnxruntime against PyTorch on random images, max over `batches`."""

    batches: tuple[int, ...]
    onnx_error: float  # max |onnxruntime - float64 PyTorch|
    torch_error: float  # max |float32 PyTorch (the model as it is) - float64 PyTorch|
    bound: float  # POLICY_FACTOR * torch_error + FLOOR * max(|logits|, 1)

    @property
    def ok(self) -> bool:
        return self.onnx_error <= self.bound

    def __str__(self) -> str:
        batches = ", ".join(map(str, self.batches))
        return (f"onnxruntime at batch {batches}: max |logits - float64 PyTorch| {self.onnx_error:.2e} "
                f"(float32 PyTorch: {self.torch_error:.2e}; bound {self.bound:.2e}): "
                f"{'ok' if self.ok else 'FAILED'}")


def _float32_posterv2(model: nn.Module) -> None:
    from .model import POSTERV2

    if not isinstance(model, POSTERV2):
        raise UsageError(f"model: expected a POSTERV2 (not an optimize() copy), got {type(model).__name__}")
    dtypes = {p.dtype for p in model.parameters()}
    if dtypes != {torch.float32}:
        raise UsageError(f"model: expected float32 parameters, got {sorted(map(str, dtypes))}")


def onnx_program(model: nn.Module, image_size: int = 224, opset: int = MIN_OPSET) -> Any:
    """The torch.onnx.ONNXProgram of `model` in eval mode, images (B, 3, image_size, image_size)
    -> logits (B, classes), B dynamic. The model's mode is left as it was."""
    from .ops.onnx import translation_table

    param = next(model.parameters())
    x = torch.randn(TRACE_BATCH, 3, image_size, image_size, device=param.device, dtype=param.dtype)
    dynamic = {"x": {0: torch.export.Dim("batch")}}
    was_training = model.training
    model.eval()
    try:
        exported = torch.export.export(model, (x,), dynamic_shapes=dynamic)
    finally:
        model.train(was_training)
    # The table is built from the traced graph: the Triton op is registered on its first run.
    table = translation_table(n.target for n in exported.graph.nodes if n.op == "call_function")
    with _quiet_exporter():
        return torch.onnx.export(exported, dynamo=True, dynamic_shapes=dynamic, opset_version=opset,
                                 input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                                 custom_translation_table=table, verbose=False)


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Without the exporter's notes that do not concern this model (torchvision's ops are
    absent; a deprecation inside torch.export's pytree code)."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec", category=FutureWarning)
            yield
    finally:
        registration.setLevel(level)


def check_onnx(path: str | os.PathLike, model: nn.Module, image_size: int = 224,
               batches: tuple[int, ...] = CHECK_BATCHES, seed: int = 0) -> OnnxCheck:
    """Run the ONNX file with onnxruntime (CPU) and `model` in float32 and float64 on the same
    random images; the errors are against the float64 model."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    same = copy.deepcopy(model).cpu().eval()
    exact = copy.deepcopy(same).double()
    gen = torch.Generator().manual_seed(seed)
    onnx_error = torch_error = 0.0
    scale = 1.0
    for batch in batches:
        x = torch.randn(batch, 3, image_size, image_size, generator=gen)
        with torch.inference_mode():
            ref, logits = exact(x.double()), same(x).double()
        got = torch.from_numpy(session.run([ONNX_OUTPUT], {ONNX_INPUT: x.numpy()})[0]).double()
        if got.shape != ref.shape:
            raise OnnxMismatch(f"{path}: logits of shape {tuple(got.shape)} at batch {batch}, "
                               f"expected {tuple(ref.shape)}")
        onnx_error = max(onnx_error, (got - ref).abs().max().item())
        torch_error = max(torch_error, (logits - ref).abs().max().item())
        scale = max(scale, ref.abs().max().item())
    return OnnxCheck(tuple(batches), onnx_error, torch_error, POLICY_FACTOR * torch_error + FLOOR * scale)


def export_onnx(model: nn.Module, path: str | os.PathLike, *, image_size: int = 224, opset: int = MIN_OPSET,
                classes: list[str] | None = None, dataset: str | None = None,
                recorded: dict[str, Any] | None = None, overwrite: bool = False,
                check: bool = True) -> OnnxCheck | None:
    """Write `model` as ONNX to `path`, with `hub.model_config` and the image size in the file's
    metadata. Needs poster_fast[onnx].

    Args:
        model: a float32 POSTERV2 (not an optimize() copy).
        path: the file; its folder is created.
        image_size: the input's height and width, fixed in the file (the batch size is dynamic).
        opset: the ONNX opset, MIN_OPSET or later.
        classes, dataset, recorded: what the metadata records (hub.model_config).
        overwrite: replace an existing file (refused otherwise).
        check: run `check_onnx` on the written file before it is renamed into place.

    Returns:
        The check's figures (None without `check`).

    Raises:
        OnnxMismatch: onnxruntime's logits are outside the error policy; `path` is left as it was.
        OutputError: the file cannot be written (files.write_file); `path` is left as it was.
        UsageError: an argument that cannot be used, naming it.
    """
    require("onnx")
    if opset < MIN_OPSET:
        raise UsageError(f"opset: expected {MIN_OPSET} or later, got {opset}")
    if image_size < 1:
        raise UsageError(f"image_size: expected a positive size, got {image_size}")
    _float32_posterv2(model)
    config = {**model_config(model, classes, dataset, recorded), "image_size": image_size,
              "onnx_input": f"{ONNX_INPUT} (B, 3, {image_size}, {image_size}) float32",
              "onnx_output": f"{ONNX_OUTPUT} (B, {model.num_classes}) float32"}
    path = check_export_file(path, overwrite)
    program = onnx_program(model, image_size, opset)
    program.model.metadata_props.update({k: json.dumps(v) for k, v in config.items()})
    checked: list[OnnxCheck] = []

    def save(tmp: Path) -> None:
        program.save(tmp, external_data=False)
        if check:
            checked.append(check_onnx(tmp, model, image_size))
            if not checked[0].ok:
                raise OnnxMismatch(f"{path} not written: {checked[0]}")
    write_file(path, save)
    return checked[0] if checked else None
