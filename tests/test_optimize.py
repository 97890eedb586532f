"""optimize(): the same function as the plain model, within the dtype's tolerance."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from poster_fast import POSTERV2
from poster_fast import optimize
from poster_fast.rewrites import conv_bn_pairs, fold_batchnorm, fold_conv_bn


def randomised(num_classes: int = 7) -> POSTERV2:
    """Random BN statistics and layer scales, so folding and the attention path both matter."""
    model = POSTERV2(num_classes, attn_backend="reference")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.2)
                m.bias.normal_(0, 0.2)
        for name, p in model.named_parameters():
            if "gamma" in name:
                p.normal_(0, 0.5)
    return model


def test_conv_bn_folding_is_exact_in_fp64():
    conv = torch.nn.Conv2d(8, 16, 3, 2, 1, groups=2).double()
    bn = torch.nn.BatchNorm2d(16).double().eval()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
        bn.weight.normal_()
        bn.bias.normal_()
    x = torch.randn(2, 8, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(fold_conv_bn(conv, bn)(x), bn(conv(x)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backbone,kept", [("ir_back", 21), ("face_landback", 0)])
def test_backbone_folding_is_exact_in_fp64(backbone, kept):
    model = randomised().double().eval()
    x = torch.randn(2, 3, 112, 112, dtype=torch.float64)
    plain = getattr(model, backbone)
    folded = fold_batchnorm(copy.deepcopy(plain))
    remaining = [m for m in folded.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(remaining) == kept  # only the leading BN of each IR unit (before a padded conv)
    with torch.no_grad():
        for a, b in zip(plain(x), folded(x)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def bn_names(module: torch.nn.Module) -> set[str]:
    return {n for n, m in module.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}


def test_pairs_follow_the_data_flow():
    """Only a conv feeding a BN directly is a pair: not BN -> conv, not conv -> act -> BN, and not
    children of a module whose forward is unknown."""
    class Unknown(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(4, 4, 1), torch.nn.BatchNorm2d(4)

    seq = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.BatchNorm2d(4),
                              torch.nn.Conv2d(4, 4, 1), torch.nn.ReLU(), torch.nn.BatchNorm2d(4), Unknown())
    assert conv_bn_pairs(seq) == [("0", "1")]


def test_folded_batchnorms():
    """Every BN fed by a conv is folded; the IR units' leading BN (before a padded conv) stays."""
    model = POSTERV2(7)
    pairs = conv_bn_pairs(model)
    leading = {f"ir_back.{stage}.{i}.res_layer.0" for stage, n in (("body1", 3), ("body2", 4), ("body3", 14))
               for i in range(n)}
    assert {bn for _, bn in pairs} == bn_names(model) - leading and len(pairs) == 93 - 21
    for pair in [("ir_back.input_layer.0", "ir_back.input_layer.1"),
                 ("ir_back.body1.0.res_layer.3", "ir_back.body1.0.res_layer.4"),
                 ("ir_back.body2.0.shortcut_layer.0", "ir_back.body2.0.shortcut_layer.1"),
                 ("face_landback.conv_23.project.conv", "face_landback.conv_23.project.bn")]:
        assert pair in pairs
    fast = optimize(model, "inference").model
    assert bn_names(fast) == leading
    assert {k.rsplit(".", 1)[0] for k in fast.state_dict() if k.endswith("running_var")} == leading


@pytest.mark.parametrize("num_classes", [7, 8])
def test_inference_logits_match(num_classes):
    model = randomised(num_classes).eval()
    fast = optimize(model, "inference")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        plain, got = model(x), fast(x)
    assert got.shape == (2, num_classes)
    torch.testing.assert_close(got, plain, rtol=1e-4, atol=1e-5)
    assert model.ir_back.body1[0].res_layer[4].__class__ is torch.nn.BatchNorm2d  # original untouched


def test_train_mode_keeps_every_tensor():
    model = POSTERV2(7)
    fast = optimize(model, "train")
    assert {k: v.shape for k, v in fast.model.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}
    assert fast.model.training


@pytest.mark.parametrize("num_classes", [7, 8])
def test_training_step_gradients_match(num_classes):
    """fp64: train-mode BatchNorm over a batch of 2 amplifies fp32 rounding differences."""
    torch.manual_seed(0)
    model = randomised(num_classes).double().train()
    fast = optimize(model, "train")
    x, y = torch.randn(2, 3, 112, 112, dtype=torch.float64), torch.tensor([1, 4])
    model.ffn2.drop_path.p = model.ffn3.drop_path.p = 0.0  # stochastic depth would differ per run
    fast.model.ffn2.drop_path.p = fast.model.ffn3.drop_path.p = 0.0
    F.cross_entropy(model(x), y).backward()
    F.cross_entropy(fast(x), y).backward()
    plain = dict(model.named_parameters())
    for name, p in fast.model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, plain[name].grad, rtol=1e-7, atol=1e-10, msg=name)


def test_compile_fullgraph_of_optimized_model():
    model = randomised().eval()
    fast = optimize(model, "inference")
    compiled = torch.compile(fast, fullgraph=True, backend="aot_eager")
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)


def test_bad_arguments():
    model = POSTERV2()
    with pytest.raises(ValueError, match="mode: expected one of"):
        optimize(model, "fast")
    with pytest.raises(ValueError, match="dtype"):
        optimize(model, dtype=torch.int8)
    with pytest.raises(ValueError, match="cuda_graphs"):
        optimize(model, cuda_graphs=True)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_inference_on_gpu():
    model = randomised().cuda().eval()
    fast = optimize(model, "inference", dtype=torch.bfloat16)
    x = torch.randn(8, 3, 224, 224, device="cuda")
    with torch.no_grad():
        plain, got = model(x), fast(x)
    assert (got.float() - plain).abs().max() <= 0.05 * plain.abs().max()


@pytest.mark.parametrize("mode, options", [("inference", {"freezing": True}), ("train", None)])
def test_compile_freezes_weights_for_cpu_inference(monkeypatch, mode, options):
    """On the CPU, a compiled inference model uses Inductor's freezing (its weights are constants,
    prepacked for oneDNN); a model being trained is compiled without it."""
    calls = []
    monkeypatch.setattr(torch, "compile", lambda module, **kwargs: calls.append(kwargs) or module)
    optimize(POSTERV2(7), mode, compile=True)
    assert calls == [{"fullgraph": True, "options": options}]


def test_inference_weights_are_held_in_the_dtype():
    """Folding happens in float32, then every weight is cast once: no per-call casts."""
    model = randomised().eval()
    fast = optimize(model, "inference", dtype=torch.float16)
    folded = optimize(model, "inference").model
    for (name, p16), p32 in zip(fast.model.state_dict().items(), folded.state_dict().values()):
        assert p16.dtype == (torch.float16 if p32.is_floating_point() else p32.dtype), name
        if p32.is_floating_point():
            torch.testing.assert_close(p16, p32.half(), rtol=0, atol=0, msg=name)
