"""The oneDNN layers of CPU inference (poster_fast.onednn) and optimize()'s use of them: the same
function as the ATen layers, forward, in fp32 and bf16, on several shapes and layouts; packed
weights kept in step with the weight; state-dict keys and values unchanged."""
from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from poster_fast import POSTERV2, onednn, optimize
from poster_fast.model.ir50 import BottleneckIR
from poster_fast.model.mobilefacenet import DepthWise
from poster_fast.rewrites import FusedAddDepthWise, FusedAddIR, use_onednn

pytestmark = pytest.mark.skipif(not onednn.support(torch.float32)[0], reason="torch built without oneDNN")
BF16 = pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
    not onednn.support(torch.bfloat16)[0], reason="oneDNN has no bf16 path on this CPU"))
# (in, out, kernel, stride, padding, groups, height): 3x3 as in IR-50, strided, 1x1 shortcut, depthwise
CONVS = [(16, 32, 3, 1, 1, 1, 9), (32, 32, 3, 2, 1, 1, 10), (16, 32, 1, 2, 0, 1, 8), (24, 24, 3, 2, 1, 24, 9),
         (3, 8, 3, 1, 1, 1, 7)]


def within_policy(got: torch.Tensor, plain: torch.Tensor, ref64: torch.Tensor) -> None:
    """got's error against float64 within 2x the plain ATen op's in the same dtype (+ fp32 roundoff)."""
    err = (got.double() - ref64).abs().max().item()
    base = (plain.double() - ref64).abs().max().item()
    assert err <= 2 * base + 1e-6 * ref64.abs().max().item(), (err, base)


def _input(shape: tuple[int, ...], layout: str, dtype: torch.dtype) -> torch.Tensor:
    x = torch.randn(*shape[:-1], shape[-1] + 3)[..., 1:-2].to(dtype)  # strided: a slice
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    return x if layout == "strided" else x.contiguous()


@pytest.mark.parametrize("dtype", [torch.float32, BF16])
@pytest.mark.parametrize("layout", ["channels_last", "contiguous", "strided"])
@pytest.mark.parametrize("case", CONVS)
@pytest.mark.parametrize("fused_add", [False, True])
def test_conv_matches_aten(case, layout, dtype, fused_add):
    cin, cout, k, stride, pad, groups, h = case
    conv = torch.nn.Conv2d(cin, cout, k, stride, pad, groups=groups).to(dtype).requires_grad_(False)
    packed = onednn.OneDNNConv2d(conv)
    with torch.no_grad():
        for batch in (4, 1):  # packed for batch 4, then run at batch 1
            x = _input((batch, cin, h, h + 1), layout, dtype)
            out_shape = conv(x).shape
            add = torch.randn(out_shape).to(dtype) if fused_add else None
            got = packed(x, add=add)
            plain = conv(x) + (add if fused_add else 0)
            ref = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), stride, pad, 1, groups)
            ref = ref + (add.double() if fused_add else 0)
            assert got.shape == plain.shape and got.dtype == dtype
            if dtype == torch.float32:
                torch.testing.assert_close(got, plain, rtol=1e-5, atol=1e-5)
            within_policy(got, plain, ref)


@pytest.mark.parametrize("dtype", [torch.float32, BF16])
@pytest.mark.parametrize("shape", [(7, 48), (3, 11, 48), (2, 5, 7, 48)])
@pytest.mark.parametrize("gelu", [False, True])
def test_linear_matches_aten(shape, dtype, gelu):
    linear = torch.nn.Linear(48, 80).to(dtype).requires_grad_(False)
    packed = onednn.OneDNNLinear(linear, gelu=gelu)
    with torch.no_grad():
        for x in (torch.randn(shape).to(dtype), torch.randn(*shape[:-1], 96)[..., ::2].to(dtype)):  # + strided
            got = packed(x)
            plain = F.gelu(linear(x)) if gelu else linear(x)
            ref = F.linear(x.double(), linear.weight.double(), linear.bias.double())
            ref = F.gelu(ref) if gelu else ref
            assert got.shape == plain.shape and got.dtype == dtype
            within_policy(got, plain, ref)


def test_packed_weight_follows_the_weight():
    """An in-place change of the weight, or a new weight, is packed again before the next call."""
    conv = torch.nn.Conv2d(8, 8, 3, padding=1).requires_grad_(False)
    linear = torch.nn.Linear(8, 4).requires_grad_(False)
    pconv, plin = onednn.OneDNNConv2d(conv), onednn.OneDNNLinear(linear)
    x, t = torch.randn(2, 8, 5, 5), torch.randn(3, 8)
    with torch.no_grad():
        pconv(x), plin(t)
        conv.weight.mul_(-2.0)
        linear.weight.add_(1.0)
        torch.testing.assert_close(pconv(x), conv(x))
        torch.testing.assert_close(plin(t), linear(t))
        pconv.weight = torch.nn.Parameter(torch.randn(8, 8, 3, 3), requires_grad=False)
        torch.testing.assert_close(pconv(x), F.conv2d(x, pconv.weight, conv.bias, padding=1))


def test_copies_and_pickles_without_the_packed_weight():
    conv = onednn.OneDNNConv2d(torch.nn.Conv2d(4, 4, 3, padding=1).requires_grad_(False))
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        y = conv(x)
        for other in (copy.deepcopy(conv), pickle.loads(pickle.dumps(conv))):
            assert other._packed is None and "_packed" not in other.state_dict()
            torch.testing.assert_close(other(x), y)


def test_gradients_take_the_aten_path():
    """The oneDNN ops have no backward: where gradients are needed the ATen ops run, and flow."""
    conv = onednn.OneDNNConv2d(torch.nn.Conv2d(4, 4, 3, padding=1))
    linear = onednn.OneDNNLinear(torch.nn.Linear(4, 4), gelu=True)
    x = torch.randn(1, 4, 5, 5, requires_grad=True)
    linear(conv(x, add=x).permute(0, 2, 3, 1)).sum().backward()
    assert x.grad is not None and conv.weight.grad is not None and linear.weight.grad is not None


def test_linear_path_env_and_support(monkeypatch):
    monkeypatch.setenv(onednn.LINEAR_ENV, "aten")
    assert onednn.linear_path(torch.float32) == "aten"
    monkeypatch.setenv(onednn.LINEAR_ENV, "onednn")
    assert onednn.linear_path(torch.float32) == "onednn"
    assert onednn.linear_path(torch.float16) == "aten"  # oneDNN has no fp16 path here: ATen's
    monkeypatch.setenv(onednn.LINEAR_ENV, "mkl")
    with pytest.raises(ValueError, match="POSTER_FAST_CPU_LINEAR: expected one of aten, onednn, got 'mkl'"):
        onednn.linear_path(torch.float32)
    monkeypatch.delenv(onednn.LINEAR_ENV)
    assert onednn.linear_path(torch.float32) in onednn.LINEAR_PATHS  # measured here
    assert not onednn.support(torch.float16)[0] and not onednn.support(torch.float64)[0]


def randomised() -> POSTERV2:
    model = POSTERV2(7, attn_backend="reference")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        for name, p in model.named_parameters():
            if "gamma" in name:
                p.normal_(0, 0.5)
    return model.eval()


@pytest.mark.parametrize("path", onednn.LINEAR_PATHS)
def test_model_rewrite_keeps_the_state_dict(monkeypatch, path):
    monkeypatch.setenv(onednn.LINEAR_ENV, path)
    model = randomised()
    fast = optimize(model, "inference")
    plain = optimize(model, "inference")
    fast_dict = fast.model.state_dict()
    assert isinstance(fast.model.ir_back.body1[0], FusedAddIR)
    assert sum(isinstance(m, FusedAddIR) for m in fast.model.modules()) == \
        sum(isinstance(m, BottleneckIR) for m in model.modules()) == 21
    assert sum(isinstance(m, FusedAddDepthWise) for m in fast.model.modules()) == \
        sum(isinstance(m, DepthWise) and m.residual for m in model.modules()) == 12
    assert not any(type(m) is torch.nn.Conv2d for m in fast.model.modules())
    linears = [type(m) for m in fast.model.modules() if isinstance(m, (torch.nn.Linear, onednn.OneDNNLinear))]
    assert set(linears) == ({onednn.OneDNNLinear} if path == "onednn" else {torch.nn.Linear})
    monkeypatch.setattr(onednn, "support", lambda dtype: (False, "no oneDNN"))  # what the other CPUs get
    unchanged = optimize(model, "inference").model.state_dict()
    assert list(fast_dict) == list(unchanged) == list(plain.model.state_dict())
    for name, value in fast_dict.items():
        assert torch.equal(value, unchanged[name]), name


@pytest.mark.parametrize("path", onednn.LINEAR_PATHS)
def test_model_logits_match_in_fp32(monkeypatch, path):
    monkeypatch.setenv(onednn.LINEAR_ENV, path)
    model = randomised()
    fast = optimize(model, "inference")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)


def test_rewrite_is_cpu_inference_only():
    model = POSTERV2(7)
    assert not any(isinstance(m, onednn.OneDNNConv2d) for m in optimize(model, "train").modules())
    folded = optimize(model, "inference", dtype=torch.float16)  # no oneDNN fp16 path here
    assert not any(isinstance(m, (onednn.OneDNNConv2d, FusedAddIR)) for m in folded.modules())
    assert folded.layers == "ATen layers: oneDNN has no CPU inference path for torch.float16 here"
    seq = torch.nn.Sequential(torch.nn.Linear(2, 2))
    assert use_onednn(seq, torch.float16) == folded.layers and type(seq[0]) is torch.nn.Linear
    assert optimize(model, "inference", onednn=False).layers == "ATen layers: optimize(onednn=False)"


def test_bf16_falls_back_to_aten_where_onednn_lacks_it(monkeypatch):
    """Where torch reports no oneDNN bf16 path, the bf16 model keeps ATen's layers, says why,
    and computes the same logits as the plain model within bf16's tolerance."""
    monkeypatch.setattr(onednn, "_bf16_path", lambda: False)
    assert onednn.support(torch.bfloat16) == (False, "oneDNN has no bf16 path on this CPU (it has one on "
                                                     "AVX-512 and AMX CPUs)")
    model = randomised()
    fast = optimize(model, "inference", dtype=torch.bfloat16)
    assert fast.layers == f"ATen layers: {onednn.support(torch.bfloat16)[1]}"
    assert not any(isinstance(m, (onednn.OneDNNConv2d, onednn.OneDNNLinear, FusedAddIR)) for m in fast.modules())
    assert optimize(model, "inference").layers.startswith("oneDNN convolutions")  # fp32 keeps oneDNN
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        ref = model(x)
        assert (fast(x) - ref).abs().max() <= 8 * 2 ** -8 * ref.abs().max()


def test_bf16_fallback_as_on_an_avx2_cpu():
    """oneDNN capped at AVX2 (ONEDNN_MAX_CPU_ISA, as on an AVX2-only CPU) has no bf16 path: the bf16
    model runs ATen's layers and says why; float32 still runs through oneDNN."""
    script = ("import torch; from poster_fast import POSTERV2, optimize; m = POSTERV2(7).eval();"
              "f = optimize(m, 'inference', dtype=torch.bfloat16); print(f.layers);"
              "print(optimize(m, 'inference').layers);"
              "print(bool(f(torch.randn(1, 3, 112, 112)).isfinite().all()))")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    bf16, fp32, finite = out.stdout.splitlines()
    assert bf16 == "ATen layers: oneDNN has no bf16 path on this CPU (it has one on AVX-512 and AMX CPUs)"
    assert fp32.startswith("oneDNN convolutions") and finite == "True"
