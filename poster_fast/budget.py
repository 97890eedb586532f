"""Parameter and FLOP budget of POSTER V2, in the two conventions people quote.

- fvcore: multiply-accumulates of convs, linears, matmuls and norms from a JIT trace
  (8.61 G on the authors' model at 1x3x224x224).
- thop, the paper's convention ("8.4G FLOPs, 43.7M params"): MACs of hooked leaf modules, with
  thop's per-module rules (thop switches the model to eval mode); it misses functional matmuls
  and counts only parameters of leaf modules that ran.
Both count MACs: true FLOPs are about twice as many.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from math import prod

import torch
from torch import nn

STAGES = {
    "landmark queries": ("face_landback", "last_face_conv"),
    "cross-fusion": ("ir_back", "conv1", "conv2", "conv3", "window1", "window2", "window3",
                     "attn1", "attn2", "attn3", "ffn1", "ffn2", "ffn3"),
    "multi-scale ViT": ("embed_q", "embed_k", "embed_v", "VIT"),
}
PAPER = {"params": 43.7e6, "macs": 8.4e9}


@dataclass
class Budget:
    params: int
    trainable: int
    frozen: int
    stage_params: dict[str, int]
    thop_params: int
    thop_macs: int
    stage_thop_macs: dict[str, int]
    fvcore_macs: int | None = None
    stage_fvcore_macs: dict[str, int] = field(default_factory=dict)
    fvcore_missing: str | None = None


def _thop_rule(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int | None:
    """MACs thop 0.1.1 assigns to one call of a leaf module; None for modules it does not hook."""
    if isinstance(module, nn.Conv2d):
        return out.numel() * (inp.shape[1] // module.groups) * prod(module.kernel_size)
    if isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
        affine = getattr(module, "affine", False) or getattr(module, "elementwise_affine", False)
        return 2 * inp.numel() * (2 if affine else 1)
    if isinstance(module, nn.PReLU):
        return 0 if module.training else inp.numel()
    if isinstance(module, nn.Linear):
        return module.in_features * out.numel()
    if isinstance(module, (nn.MaxPool2d, nn.ReLU, nn.Dropout, nn.Identity)):
        return 0
    return None


def _count_thop(model: nn.Module, x: torch.Tensor) -> tuple[int, int, dict[str, int]]:
    macs: dict[str, int] = {}
    params: dict[str, int] = {}
    hooks = []
    for name, module in model.named_modules():
        if next(module.children(), None) is not None:
            continue

        def hook(m, args, out, name=name):
            ops = _thop_rule(m, args[0], out)
            if ops is not None:
                macs[name] = macs.get(name, 0) + ops
                params[name] = sum(p.numel() for p in m.parameters())
        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return sum(params.values()), sum(macs.values()), _by_stage(macs)


def _by_stage(per_module: dict[str, int]) -> dict[str, int]:
    top = lambda name: name.split(".")[0]
    return {stage: sum(v for k, v in per_module.items() if top(k) in members)
            for stage, members in STAGES.items()}


def _count_fvcore(model: nn.Module, x: torch.Tensor) -> tuple[int, dict[str, int]]:
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    by_module = analysis.by_module()
    stages = {stage: sum(int(by_module[m]) for m in members) for stage, members in STAGES.items()}
    total = int(analysis.total())
    stages["input resize (top level)"] = total - sum(stages.values())
    return total, stages


def budget(model: nn.Module, image_size: int = 224) -> Budget:
    """Count a POSTERV2 (or any model with the same top-level names) on one 3 x size x size image."""
    work = copy.deepcopy(model).float().cpu()
    if hasattr(work, "attn_backend"):
        work.attn_backend = "reference"  # counters see the attention's matmuls only as plain ops
    x = torch.rand(1, 3, image_size, image_size)
    total = sum(p.numel() for p in work.parameters())
    trainable = sum(p.numel() for p in work.parameters() if p.requires_grad)
    stage_params = {stage: sum(p.numel() for m in members for p in getattr(work, m).parameters())
                    for stage, members in STAGES.items()}
    work.eval()
    thop_params, thop_macs, stage_thop = _count_thop(work, x)
    result = Budget(total, trainable, total - trainable, stage_params, thop_params, thop_macs, stage_thop)
    try:
        result.fvcore_macs, result.stage_fvcore_macs = _count_fvcore(work, x)
    except ImportError:
        result.fvcore_missing = "fvcore is not installed (pip install 'poster_fast[bench]')"
    return result


def format_budget(b: Budget) -> str:
    g = lambda n: f"{n / 1e9:.3f} G"
    m = lambda n: f"{n / 1e6:.3f} M"
    rows = [("parameters (total)", f"{b.params:,}", m(b.params)),
            ("  trainable", f"{b.trainable:,}", ""), ("  frozen (landmark net)", f"{b.frozen:,}", "")]
    rows += [(f"  {s}", f"{p:,}", "") for s, p in b.stage_params.items()]
    rows += [("thop params (paper: 43.7M)", f"{b.thop_params:,}", m(b.thop_params)),
             ("thop MACs (paper: 8.4G)", f"{b.thop_macs:,}", g(b.thop_macs))]
    rows += [(f"  {s}", f"{v:,}", g(v)) for s, v in b.stage_thop_macs.items()]
    if b.fvcore_macs is None:
        rows.append(("fvcore MACs", b.fvcore_missing or "", ""))
    else:
        rows.append(("fvcore MACs (authors' model: 8.613G)", f"{b.fvcore_macs:,}", g(b.fvcore_macs)))
        rows += [(f"  {s}", f"{v:,}", g(v)) for s, v in b.stage_fvcore_macs.items()]
    width = max(len(r[0]) for r in rows)
    lines = ["POSTER V2 budget, one 1x3x224x224 image (MACs; FLOPs ~ 2x MACs)"]
    lines += [f"{a:<{width}}  {b_:>16}  {c}" for a, b_, c in rows]
    return "\n".join(lines)
