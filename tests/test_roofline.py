"""The bench's roofline and profile sections: the model's FLOPs, the op classes of the profile,
the dtypes measured per kind of CPU, and the section rows of a run (no timing asserts)."""
from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from poster_fast import device as hw
from poster_fast import optimize
from poster_fast.benchmarking import config, profile, report, roofline, runner
from poster_fast.benchmarking.timing import Progress
from poster_fast.model import POSTERV2
from poster_fast.model.cross_fusion import WindowNorm

FVCORE_MACS = 8_612_845_056  # fvcore's count of one 224x224 image (tests/test_bench.py)


def small_config(**changes) -> config.Config:
    base = dict(device=torch.device("cpu"), batch=1, model_batch=1, dtypes=["fp32"], levels=[3],
                backends=["reference"], requested=set(), warmup=0, iters=1, model_warmup=0,
                model_iters=1, sections=["roofline"], quick=True, threads=1)
    return config.Config(**{**base, **changes})


@pytest.fixture(scope="module")
def flops_per_image() -> int:
    return roofline.model_flops()


def test_model_flops(flops_per_image):
    """FlopCounterMode's count: twice fvcore's MACs within 1% (fvcore counts the attention's
    matmuls differently), and linear in the batch."""
    assert abs(flops_per_image - 2 * FVCORE_MACS) <= 0.01 * 2 * FVCORE_MACS
    assert roofline.model_flops(2) == 2 * flops_per_image


def test_profile_counts_every_flop_of_the_optimized_model(flops_per_image):
    """The profile of optimize()'s model (oneDNN layers, fused W-MCSA, SDPA) finds the plain
    model's FLOPs, each in its class."""
    fast = optimize(POSTERV2(7).eval(), "inference")
    p = profile.profile_forward(lambda: fast(torch.randn(1, 3, 112, 112)))
    assert sum(p.flops.values()) == flops_per_image
    assert p.flops["convolution"] > 0.7 * flops_per_image and p.flops["linear"] > 0.25 * flops_per_image
    assert 0 < p.flops["depthwise convolution"] < p.flops["attention"] < 0.03 * flops_per_image
    assert p.calls["depthwise convolution"] == 16  # MobileFaceNet's
    assert p.total_ms == pytest.approx(sum(p.ms.values())) and p.ms["convolution"] > 0


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.window = WindowNorm(2, 4)
        self.linear = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.gelu(self.dw(self.conv(x)))
        windows, _ = self.window(y.contiguous())
        return self.linear(windows.contiguous()).clone()


def test_op_classes():
    tiny = _Tiny().eval()
    p = profile.profile_forward(lambda: tiny(torch.randn(2, 4, 4, 4)))
    assert {c for c, n in p.calls.items() if n} >= {"convolution", "depthwise convolution", "elementwise",
                                                    "normalisation", "linear", "window partition", "layout copy"}
    assert set(p.calls) <= set(profile.OP_CLASSES)
    outputs = 2 * 4 * 4 * 4  # B * C * H * W
    assert p.flops["convolution"] == 2 * outputs * 4 * 9  # 2 FLOPs per MAC, Cin * 3 * 3 MACs an output
    assert p.flops["depthwise convolution"] == 2 * outputs * 9
    assert p.flops["linear"] == 2 * (2 * 4 * 4) * 4 * 6  # tokens x in x out


@pytest.mark.parametrize("features, expected", [
    (frozenset(), ["fp32"]),                              # AVX2, or AVX-512 without BF16
    (frozenset({"avx512_bf16"}), ["fp32", "bf16"]),       # Cooper Lake, Zen 4, Zen 5
    (frozenset({"amx_bf16", "avx512_bf16"}), ["fp32", "bf16"]),  # Sapphire Rapids
])
def test_roofline_dtypes_follow_native_bf16(monkeypatch, features, expected):
    monkeypatch.setattr(hw, "_cpu_features", lambda: features)
    cpu = torch.device("cpu")
    assert roofline.roofline_dtypes(cpu, None) == expected
    assert roofline.roofline_dtypes(cpu, ["bf16", "fp16"]) == [d for d in expected if d == "bf16"]


def test_interleaved_medians():
    calls: list[str] = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b") or time.sleep(0.002)}
    ms = roofline.interleaved_ms(fns, torch.device("cpu"), warmup=1, rounds=3)
    assert calls == ["a", "b"] * 4 and ms["b"] > ms["a"] >= 0
    assert set(roofline.interleaved_ms(fns, torch.device("cpu"), 0, 1, clock="cpu")) == {"a", "b"}


def test_sections_in_a_run(tmp_path, monkeypatch):
    """One roofline and one profile row per dtype measured, their tables, and rows cut by the
    time limit; the measuring itself is replaced (the quick run in test_bench.py runs it)."""
    monkeypatch.setattr(roofline, "measure", lambda dtype, *args: {"conv_gflop_s": 100.0, "conv_path": "torch",
                                                                    "matmul_gflop_s": 90.0, "linear_path": "aten",
                                                                    "model_gflop_s": 85.0, "fraction": 0.85,
                                                                    "model_ms_per_image": 200.0, "latency_b1_ms": 210.0})
    monkeypatch.setattr(profile, "profile_model", lambda *args: [
        {"op_class": "convolution", "ms": 3.0, "share": 0.75, "gflop": 1.0, "gflop_s": 333.0, "calls": 2},
        {"op_class": "other", "ms": 1.0, "share": 0.25, "gflop": 0.0, "gflop_s": None, "calls": 5}])
    cfg = small_config(sections=["roofline", "profile"], roofline_dtypes=["fp32", "bf16"], batch=8)
    result = runner.run(cfg, json_path=tmp_path / "b.json", progress=Progress(enabled=False))
    rows = result["roofline"]["rows"]
    assert [(r["dtype"], r["status"], r["fraction"]) for r in rows] == [("fp32", "ok", 0.85), ("bf16", "ok", 0.85)]
    assert result["roofline"]["flops_per_image"] == roofline.model_flops()
    assert [r["status"] for r in result["profile"]["rows"]] == ["ok", "ok"] and result["complete"]
    text = report.format_roofline(result["roofline"]) + report.format_profile(result["profile"])
    assert "0.85" in text and "75.0%" in text and "batch 8" in text
    cut = runner.run(small_config(sections=["profile"], time_limit=0.0), progress=Progress(enabled=False))
    assert cut["profile"]["rows"][0]["status"] == "cut" and cut["complete"] is False
