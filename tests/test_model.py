"""POSTERV2: module tree, shapes, modes, compile/export, and the W-MCSA block against an
independent re-derivation of the authors' formula."""
from __future__ import annotations

import csv
import math
import pathlib

import pytest
import torch
import torch.nn.functional as F

from poster_fast import POSTERV2

AUTHORS_KEYS = pathlib.Path(__file__).parent / "data" / "authors_state_dict.tsv"


def authors_rows(num_classes: int) -> dict[str, tuple[tuple[int, ...], bool]]:
    """key -> (shape, influences the logits) of the authors' state dict (tests/data)."""
    with AUTHORS_KEYS.open() as f:
        rows = list(csv.DictReader((line for line in f if not line.startswith("#")), delimiter="\t"))
    shape = lambda s: () if s == "scalar" else tuple(int(d) for d in s.split("x"))
    out = {r["key"]: (shape(r["shape"]), r["used"] == "yes") for r in rows}
    for key in ("VIT.head.linear.weight", "VIT.head.linear.bias"):  # the only class-count keys
        dims, used = out[key]
        out[key] = ((num_classes, *dims[1:]), used)
    return out


def live_rows(num_classes: int) -> dict[str, tuple[int, ...]]:
    return {k: dims for k, (dims, used) in authors_rows(num_classes).items() if used}


@pytest.mark.parametrize("num_classes", [7, 8])
def test_state_dict_matches_authors_live_keys(num_classes):
    expected = live_rows(num_classes)
    got = {k: tuple(v.shape) for k, v in POSTERV2(num_classes).state_dict().items()}
    assert len(expected) == 711
    assert sorted(set(expected) - set(got)) == [] and sorted(set(got) - set(expected)) == []
    assert {k: got[k] for k in expected} == expected


def test_unused_key_pattern_is_exactly_the_authors_dead_keys():
    from poster_fast.checkpoint import UNUSED_KEY

    rows = authors_rows(7)
    dead = sorted(k for k, (_, used) in rows.items() if not used)
    assert len(dead) == 36
    assert sorted(k for k in rows if UNUSED_KEY.match(k)) == dead


@pytest.mark.parametrize("num_classes,params", [(7, 43_753_941), (8, 43_754_710)])
def test_parameter_count_is_the_papers(num_classes, params):
    model = POSTERV2(num_classes)
    assert sum(p.numel() for p in model.parameters()) == params
    assert all(not p.requires_grad for p in model.face_landback.parameters())


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return POSTERV2(7, attn_backend="reference").eval()


def test_output_shape_dtype_and_any_input_size(model):
    with torch.no_grad():
        for shape in [(1, 3, 224, 224), (1, 3, 160, 96), (2, 3, 112, 112)]:
            out = model(torch.randn(*shape))
            assert out.shape == (shape[0], 7) and out.dtype == torch.float32
        big = torch.randn(1, 3, 448, 448)
        torch.testing.assert_close(model(big), model(F.interpolate(big, size=112)), rtol=0, atol=0)


def test_eval_is_deterministic_and_batch_independent(model):
    x = torch.randn(3, 3, 112, 112)
    with torch.no_grad():
        a, b = model(x), model(x)
        single = torch.cat([model(x[i:i + 1]) for i in range(3)])
    assert torch.equal(a, b)
    torch.testing.assert_close(a, single, rtol=1e-5, atol=1e-6)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="x: expected images of shape"):
        POSTERV2()(torch.randn(2, 1, 64, 64))
    with pytest.raises(ValueError, match="num_classes"):
        POSTERV2(0)


@pytest.mark.parametrize("batch", [1, 2])
def test_train_step_works_and_landmark_net_stays_frozen(batch):
    model = POSTERV2(7, attn_backend="reference").train()
    assert not model.face_landback.training and model.ir_back.training
    stats = model.face_landback.conv1.bn.running_mean.clone()
    loss = F.cross_entropy(model(torch.randn(batch, 3, 112, 112)), torch.arange(batch) % 7)
    loss.backward()
    assert torch.equal(stats, model.face_landback.conv1.bn.running_mean)
    assert all(p.grad is None for p in model.face_landback.parameters())
    assert model.attn1.relative_position_bias_table.grad is not None
    assert model.VIT.head.linear.weight.grad.abs().sum() > 0


def test_drop_path_is_active_only_in_training():
    model = POSTERV2(7, attn_backend="reference")
    assert [model.ffn1.drop_path.p, model.ffn2.drop_path.p, model.ffn3.drop_path.p] == [0.0, 0.125, 0.25]
    x = torch.ones(64, 4)
    model.ffn3.train()
    dropped = model.ffn3.drop_path(x)
    kept = dropped[:, 0][dropped[:, 0] != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / 0.75))
    assert (dropped == 0).any() and len(kept) > 0
    model.ffn3.eval()
    assert torch.equal(model.ffn3.drop_path(x), x)


def spec_window_attention(attn, x_windows, landmark_map, heads):
    """The block's window attention re-derived from the authors' formula: explicit index loops,
    float64, no shared code."""
    b, c, hh, ww = landmark_map.shape
    n, d = hh * ww, c // heads
    q = landmark_map.permute(0, 2, 3, 1).reshape(b, n, heads, d).permute(0, 2, 1, 3)
    kv = x_windows @ attn.qkv.weight.T + attn.qkv.bias
    k = kv[..., :c].reshape(b, n, heads, d).permute(0, 2, 1, 3)
    v = kv[..., c:].reshape(b, n, heads, d).permute(0, 2, 1, 3)
    table = attn.relative_position_bias_table
    bias = torch.empty(heads, n, n, dtype=table.dtype)
    for i in range(n):
        for j in range(n):
            dh, dw = i // ww - j // ww + hh - 1, i % ww - j % ww + ww - 1
            bias[:, i, j] = table[dh * (2 * ww - 1) + dw]
    scale = torch.tensor(float(d), dtype=torch.float32) ** -0.5  # the authors round the scale to float32
    logits = q @ k.transpose(-1, -2) * scale.item() + bias
    out = torch.softmax(logits, -1) @ v
    return out.permute(0, 2, 1, 3).reshape(b, n, c) @ attn.proj.weight.T + attn.proj.bias


def test_window_attention_block_matches_spec_rederivation():
    torch.manual_seed(1)
    model = POSTERV2(7, attn_backend="reference").double()
    # level 3: 7x7 windows, 8 heads of 32
    attn, window, ffn = model.attn3, model.window3, model.ffn3.eval()
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()
        ffn.gamma1.normal_()
        ffn.gamma2.normal_()
        window.norm.weight.normal_()
        window.norm.bias.normal_()
    image_map = torch.randn(2, 256, 7, 7, dtype=torch.float64)
    landmark = torch.randn(2, 256, 7, 7, dtype=torch.float64)
    x_windows, shortcut = window(image_map)
    q = landmark.permute(0, 2, 3, 1).reshape(2, 49, 8, 32).transpose(1, 2)
    got = ffn(attn(x_windows, q), shortcut)
    attn_out = spec_window_attention(attn, x_windows, landmark, 8)
    y = shortcut + ffn.gamma1 * attn_out.reshape(2, 7, 7, 256)
    h = F.layer_norm(y, (256,), ffn.norm.weight, ffn.norm.bias, 1e-5)
    expected = y + ffn.gamma2 * (F.gelu(h @ ffn.mlp.fc1.weight.T + ffn.mlp.fc1.bias) @ ffn.mlp.fc2.weight.T
                                 + ffn.mlp.fc2.bias)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    assert math.isclose(attn.scale, 32 ** -0.5, rel_tol=1e-7) and attn.scale != 32 ** -0.5


def test_attention_matters_once_layer_scale_is_randomised(model):
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        base = model(x)
        saved = model.ffn1.gamma1.clone()
        model.ffn1.gamma1.normal_()
        changed = model(x)
        table = model.attn1.relative_position_bias_table
        old = table.clone()
        table.normal_()
        changed_again = model(x)
        model.ffn1.gamma1.copy_(saved)
        table.copy_(old)
    assert not torch.allclose(base, changed)
    assert not torch.allclose(changed, changed_again)


def test_dynamo_sees_no_graph_break(model):
    explanation = torch._dynamo.explain(model)(torch.randn(1, 3, 112, 112))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_compile_fullgraph_matches_eager(model):
    x = torch.randn(2, 3, 112, 112)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-6)


def test_torch_export(model):
    x = torch.randn(2, 3, 112, 112)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_fused_backends_in_the_model_on_gpu(backend):
    """Logits and bias-table gradients of the whole model: fused backend vs reference, fp32."""
    from poster_fast import ops

    torch.manual_seed(0)
    model = POSTERV2(7, attn_backend="reference").cuda().train()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "gamma" in name or "relative_position_bias_table" in name:
                p.normal_(0, 0.5)
    for i in (1, 2, 3):
        getattr(model, f"ffn{i}").drop_path.p = 0.0
    x = torch.randn(4, 3, 224, 224, device="cuda")
    attn = model.attn1
    q = torch.randn(4, 2, 784, 32, device="cuda")
    why = ops.explain(q, q, q, attn.relative_position_bias_table, 28)["skipped"].get(backend)
    if why and any("not picked automatically" not in w for w in why):
        pytest.skip(f"{backend}: {why}")
    results = {}
    for name in ("reference", backend):
        model.zero_grad()
        model.attn_backend = name
        logits = model(x)
        logits.square().sum().backward()
        results[name] = (logits.detach(), [getattr(model, f"attn{i}").relative_position_bias_table.grad.clone()
                                           for i in (1, 2, 3)])
    (ref, ref_grads), (got, got_grads) = results["reference"], results[backend]
    torch.testing.assert_close(got, ref, rtol=2e-3, atol=2e-3)
    for g, r in zip(got_grads, ref_grads):
        assert (g - r).norm() <= 1e-2 * r.norm() + 1e-6
