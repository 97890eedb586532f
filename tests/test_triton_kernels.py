"""Triton kernels below the op: every autotune config, forward and all gradients against the
fp64-anchored policy (CPU interpreter on small shapes; GPU on POSTER's three level shapes), the
d_table tiling and reduction, the float32 table, 3xTF32 accuracy and the config-set switch.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from poster_fast.ops import window_cross_attention as ops_wca
from poster_fast.ops.backends import triton as triton_backend
from poster_fast.model import LEVELS as MODEL_LEVELS
from wmca_utils import (Case, assert_within_reference_error, forward_and_grads, level_cases, make_inputs,
                        reference_results)

pytestmark = [
    pytest.mark.skipif(not triton_backend.FOUND, reason="triton is not installed"),
    pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning"),
]
if triton_backend.FOUND:
    from poster_fast.ops.triton import kernels, launch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
TUNED = ("_fwd_kernel", "_dkdv_kernel", "_dq_kernel", "_dtable_kernel")
LEVELS = level_cases()
ROOT = Path(__file__).resolve().parents[1]


def check(case: Case, dtype: torch.dtype) -> None:
    """Forward and all gradients of the triton backend within the policy, fresh random inputs."""
    inputs = make_inputs(case, dtype, DEVICE)
    grad_out = torch.randn(case.batch * case.windows, case.heads, case.tokens, case.head_dim,
                           device=DEVICE, dtype=dtype)
    got = forward_and_grads(inputs, case.window, "triton", grad_out)
    exact, same = reference_results(inputs, case.window, grad_out)
    assert_within_reference_error(got, exact, same)


def use_config(monkeypatch: pytest.MonkeyPatch, index: int, allowed=lambda name, i: True) -> list[str]:
    """Give each autotuned kernel one config: the index-th (or its last) of those `allowed`."""
    chosen = []
    for name in TUNED:
        full = kernels.CONFIGS[name]
        picks = [i for i in range(len(full)) if allowed(name, i)]
        i = picks[min(index, len(picks) - 1)]
        monkeypatch.setattr(getattr(kernels, name), "configs", [full[i]])
        chosen.append(f"{name}[{i}]")
    return chosen


MAX_CONFIGS = max(len(c) for c in kernels.CONFIGS.values()) if triton_backend.FOUND else 1


# ---- every config on the GPU, POSTER's level shapes ----------------------------------------

@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("level", list(LEVELS))
@pytest.mark.parametrize("dtype", [F32, BF16], ids=str)
def test_every_config_at_level_shapes_gpu(level: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each config the autotuner may pick on this GPU for this dtype, one at a time (the first of
    them is what the other GPU tests use)."""
    major, minor = torch.cuda.get_device_capability()
    arch = 10 * major + minor
    for index in range(MAX_CONFIGS):
        with monkeypatch.context() as m:
            chosen = use_config(m, index, lambda name, i: kernels.may_pick(name, i, dtype, arch))
            try:
                check(LEVELS[level], dtype)
            except AssertionError as exc:
                raise AssertionError(f"configs {chosen}: {exc}") from exc


# ---- every config under the interpreter, small shapes --------------------------------------

def _block_sizes(index: int) -> tuple:
    """What a config index changes under the interpreter (warps and stages do not matter there)."""
    return tuple(tuple(kernels.CONFIGS[n][min(index, len(kernels.CONFIGS[n]) - 1)].kwargs.items()) for n in TUNED)


INTERPRETED_CONFIGS = sorted({_block_sizes(i): i for i in reversed(range(MAX_CONFIGS))}.values()) \
    if triton_backend.FOUND else []
SMALL = {"n49": (Case(2, 1, 2, (7, 7), 16), F32),
         "multiwindow_nonsquare": (Case(1, 3, 2, (5, 9), 16), F32),  # N = 45: partial blocks
         "n49_bf16": (Case(1, 1, 2, (7, 7), 16), BF16)}


@pytest.mark.skipif(DEVICE != "cpu", reason="the interpreter sweep; the GPU test above covers the GPU")
@pytest.mark.parametrize("index", INTERPRETED_CONFIGS)
@pytest.mark.parametrize("name", list(SMALL))
def test_every_config_interpreted(name: str, index: int, monkeypatch: pytest.MonkeyPatch) -> None:
    use_config(monkeypatch, index)
    check(*SMALL[name])


# ---- d_table ---------------------------------------------------------------------------------

@pytest.mark.parametrize("window,tiling", [((28, 28), (64, 2, 14)), ((14, 14), (32, 2, 7)), ((7, 7), (64, 7, 1)),
                                           ((3, 5), (16, 3, 1)), ((2, 20), (64, 2, 1)), ((5, 33), (64, 1, 5))])
def test_table_tiling(window: tuple[int, int], tiling: tuple[int, int, int]) -> None:
    """Tiles of whole image rows with the fewest padded tokens (POSTER's levels first)."""
    assert launch.table_tiling(*window) == tiling


@pytest.mark.parametrize("batch", [2, 144])
def test_table_partial_buffer_is_bounded(batch: int) -> None:
    """At most TABLE_PROGRAMS tiles (plus one per offset), and linear in N: never a buffer of
    all the dS tiles."""
    for level in MODEL_LEVELS:
        wh = ww = level.window
        heads = level.heads
        _, _, nt = launch.table_tiling(wh, ww)
        iters, slots = launch.table_slots(batch, nt, heads)
        extra = (2 * nt - 1) * heads
        assert slots * heads <= min(launch.TABLE_PROGRAMS, batch * nt * heads) + extra
        assert iters * slots >= batch * nt * nt


TABLE_CASES = {  # case, TABLE_PROGRAMS: every case has slots of several iterations and an
    # offset split over several slots
    "multiwindow": (Case(2, 3, 2, (4, 6), 16), 5),  # one tile per window
    "nonsquare_tall": (Case(2, 1, 2, (7, 5), 16), 1024),  # N = 35, last tile one image row
    "nonsquare_wide": (Case(1, 2, 2, (3, 11), 16), 1024),  # one image row per 16-token tile
    "wide_rows": (Case(2, 1, 1, (3, 40), 32), 1024),  # Ww > 32: one image row per 64-token tile
}


@pytest.mark.parametrize("name", list(TABLE_CASES))
def test_table_gradient_shapes(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    case, programs = TABLE_CASES[name]
    monkeypatch.setattr(launch, "TABLE_PROGRAMS", programs)
    nt = launch.table_tiling(*case.window)[2]
    iters, slots = launch.table_slots(case.batch * case.windows, nt, case.heads)
    assert iters > 1 and slots > 2 * nt - 1
    check(case, F32)


def test_table_gradient_is_bitwise_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "TABLE_PROGRAMS", 7)  # slots of 6 iterations, offset 0 in 2 slots
    case = Case(2, 2, 1, (5, 7), 16)
    q, k, v, table = (t.detach() for t in make_inputs(case, F32, DEVICE))
    out, lse = launch.forward(q, k, v, table, *case.window, 0.25)
    dout = torch.randn_like(out)
    first = launch.backward(dout, q, k, v, table, out, lse, *case.window, 0.25)
    torch.full((1 << 20,), float("nan"), device=DEVICE)  # dirty the allocator between runs
    second = launch.backward(dout, q, k, v, table, out, lse, *case.window, 0.25)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
def test_half_table_is_read_as_float32(dtype: torch.dtype) -> None:
    """A half table gives bitwise the results of the same values in a float32 table, and its
    gradient comes back in the table's dtype: the float32 one rounded (to within one unit in the
    last place: the interpreter truncates float32 -> bfloat16 where the GPU rounds to nearest)."""
    case = Case(2, 1, 2, (3, 5), 16)
    q, k, v, table = (t.detach() for t in make_inputs(case, dtype, DEVICE))
    out_h, lse_h = launch.forward(q, k, v, table, *case.window, 0.25)
    out_f, lse_f = launch.forward(q, k, v, table.float(), *case.window, 0.25)
    assert torch.equal(out_h, out_f) and torch.equal(lse_h, lse_f)
    dout = torch.randn_like(out_h)
    grads_h = launch.backward(dout, q, k, v, table, out_h, lse_h, *case.window, 0.25)
    grads_f = launch.backward(dout, q, k, v, table.float(), out_f, lse_f, *case.window, 0.25)
    assert grads_h[3].dtype == dtype and grads_f[3].dtype == F32
    for a, b in zip(grads_h[:3], grads_f[:3]):
        assert torch.equal(a, b)
    ulp = torch.finfo(dtype).eps * grads_f[3].abs()
    assert ((grads_h[3].float() - grads_f[3]).abs() <= ulp).all()


# ---- launches and the table's layout ---------------------------------------------------------

def test_launches_and_head_major_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """One Triton launch forward, four backward (delta comes from the dq kernel), every kernel
    reading the table as float32 with stride 1 between relative positions (one copy per call, made
    by the backend; none in the backward, none for a table already in that layout)."""
    launched: list[tuple[str, object]] = []  # (kernel, (stride, dtype) of its table argument)
    real = launch._launch

    class Recording:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            def run(*args, **kwargs):
                name = self.kernel.fn.__name__
                table_arg = None if name == "_dtable_reduce_kernel" else args[3]  # TAB
                launched.append((name, None if table_arg is None else (table_arg.stride(), table_arg.dtype)))
                return real(self.kernel)[grid](*args, **kwargs)
            return run
    monkeypatch.setattr(launch, "_launch", Recording)
    case = Case(2, 1, 3, (3, 5), 16)
    for dtype in (F32, BF16):
        launched.clear()
        q, k, v, table = make_inputs(case, dtype, DEVICE)
        out = ops_wca(q, k, v, table, case.window, backend="triton")
        assert [name for name, _ in launched] == ["_fwd_kernel"]
        torch.autograd.backward(out, torch.randn_like(out))
        assert [name for name, _ in launched] == ["_fwd_kernel", "_dq_kernel", "_dkdv_kernel", "_dtable_kernel",
                                                  "_dtable_reduce_kernel"]
        assert all(layout == ((1, table.shape[0]), F32) for _, layout in launched if layout is not None)
        assert table.grad.dtype == dtype and table.grad.shape == table.shape


@pytest.mark.parametrize("dtype", [F32, F16, BF16], ids=str)
def test_table32(dtype: torch.dtype) -> None:
    table = torch.randn(45, 3).to(dtype)
    head_major = launch.table32(table)
    assert head_major.dtype == F32 and head_major.stride() == (1, 45) and torch.equal(head_major, table.float())
    assert launch.table32(head_major) is head_major


# ---- 3xTF32 ----------------------------------------------------------------------------------

def _tf32x3_check():
    spec = importlib.util.spec_from_file_location("tf32x3_check", ROOT / "benchmarks" / "tf32x3_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("level", list(LEVELS))
def test_tf32x3_within_fp32_policy(level: str) -> None:
    """fp32 dots as 3xTF32 (emulated as the tensor cores run them) keep forward and all
    gradients within the fp32 policy at POSTER's level shapes."""
    check_module = _tf32x3_check()
    case = LEVELS[level]
    inputs = make_inputs(case, F32)
    grad_out = torch.randn(case.batch, case.heads, case.tokens, case.head_dim)
    exact, same = reference_results(inputs, case.window, grad_out)
    got = check_module.kernel_dots(inputs, case.window, grad_out, check_module.mm_tf32x3)
    assert_within_reference_error(got, exact, same)


def test_tensor_core_accumulation_model() -> None:
    """The model of the tensor cores' sum on hand-made steps: "rn" rounds a step's exact sum once;
    "rz" aligns the terms to the largest one's fp32 ulp, drops what lies below, truncates the sum."""
    m = _tf32x3_check()
    one = torch.ones(1, 1, dtype=torch.float64)
    quarter = one * 2.0 ** -25  # a quarter of 1.0's fp32 ulp
    assert m.tc_step([one, quarter, quarter, quarter, quarter], "rn").item() == 1 + 2 ** -23
    assert m.tc_step([one, quarter, quarter, quarter, quarter], "rz").item() == 1.0
    assert m.tc_step([-3 * one, -(2 ** -22 + 2 ** -23) * one], "rz").item() == -(3 + 2 ** -22)
    assert m.tc_step([(2 ** 24 - 1) * one, 1.5 * one], "rz").item() == 2 ** 24  # carry, then 24 bits
    a, b = torch.randn(3, 5, 40), torch.randn(3, 40, 6)
    exact = a.double() @ b.double()
    for rounding in ("rn", "rz"):
        got = m.mm_tf32x3_tc(a, b, rounding=rounding, k_step=4, tile_k=16).double()
        assert (got - exact).abs().max() <= 40 * 2 ** -23 * (a.abs().double() @ b.abs().double()).max()


def test_tf32x3_on_tensor_cores_within_fp32_policy() -> None:
    """With the tensor cores' own sum modelled as its worst case here (truncating adder, 4 products
    a step: benchmarks/tf32x3_check.py, which runs all three levels), forward and all gradients stay
    within the fp32 policy; level 3's shape at batch 2 (the model is slow on the CPU)."""
    check_module = _tf32x3_check()
    case = Case(2, 1, 8, (7, 7), 32)
    inputs = make_inputs(case, F32)
    grad_out = torch.randn(case.batch, case.heads, case.tokens, case.head_dim)
    exact, same = reference_results(inputs, case.window, grad_out)
    mm = functools.partial(check_module.mm_tf32x3_tc, rounding="rz", k_step=4)
    assert_within_reference_error(check_module.kernel_dots(inputs, case.window, grad_out, mm), exact, same)


def test_tf32x3_lowering_is_the_modelled_one(tmp_path: Path) -> None:
    """Triton lowers a tf32x3 dot with an accumulator as the model assumes: three tf32 dots chained
    from zero (small x big, big x small, NaNs zeroed, big x big), then the accumulator added in fp32
    (compiled for sm_80 and sm_90 in a subprocess without the interpreter; no GPU needed)."""
    code = (
        "import re\n"
        "import triton, triton.language as tl\n"
        "from triton.backends.compiler import GPUTarget\n"
        "from triton.compiler import ASTSource\n"
        "@triton.jit\n"
        "def k(A, B, C, OUT):\n"
        "    i = tl.arange(0, 64)\n"
        "    j = tl.arange(0, 32)\n"
        "    a = tl.load(A + i[:, None] * 32 + j[None, :])\n"
        "    b = tl.load(B + j[:, None] * 32 + j[None, :])\n"
        "    acc = tl.load(C + i[:, None] * 32 + j[None, :])\n"
        "    tl.store(OUT + i[:, None] * 32 + j[None, :], acc + tl.dot(a, b, input_precision='tf32x3'))\n"
        "src = ASTSource(k, {'A': '*fp32', 'B': '*fp32', 'C': '*fp32', 'OUT': '*fp32'}, {})\n"
        "for arch in (80, 90):\n"
        "    ir = triton.compile(src, target=GPUTarget('cuda', arch, 32), options={'num_warps': 4}).asm['ttgir']\n"
        "    found = re.findall(r'= (tt\\.dot|ttng\\.warp_group_dot|arith\\.cmpf uno|arith\\.select|arith\\.addf)\\b', ir)\n"
        "    print(arch, [op.split('.')[-1].replace('warp_group_dot', 'dot') for op in found])\n"
    )
    (tmp_path / "lowering.py").write_text(code)  # triton.jit reads the kernel's source file
    env = {key: val for key, val in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, str(tmp_path / "lowering.py")], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    chain = "['dot', 'dot', 'cmpf uno', 'select', 'dot', 'addf']"
    assert result.stdout.splitlines() == [f"80 {chain}", f"90 {chain}"]


def test_tf32_rounding_matches_the_interpreter_emulation() -> None:
    """The kernels' interpreter emulation (_tf32x3_emulated) and the PyTorch one agree."""
    if not kernels.INTERPRET:
        pytest.skip("the interpreter emulation runs under TRITON_INTERPRET=1 only")
    import triton
    import triton.language as tl

    @triton.jit
    def dot3(A, B, C, F32DOT: tl.constexpr):
        i = tl.arange(0, 16)
        a = tl.load(A + i[:, None] * 16 + i[None, :])
        b = tl.load(B + i[:, None] * 16 + i[None, :])
        tl.store(C + i[:, None] * 16 + i[None, :], kernels._mm(a, b, "ieee", F32DOT))

    a, b = torch.randn(16, 16), torch.randn(16, 16)
    c = torch.empty(16, 16)
    dot3[(1,)](a, b, c, F32DOT=True)
    want = _tf32x3_check().mm_tf32x3(a, b)
    torch.testing.assert_close(c, want, rtol=1e-6, atol=1e-6)
    assert not torch.equal(c, a @ b)  # not plain fp32


# ---- config lists and the POSTER_FAST_TRITON_CONFIGS switch ------------------------------------

ARCHS = (80, 90)


def test_every_dtype_and_arch_has_a_config() -> None:
    """The autotuner has a config for every dtype on sm_80 and sm_90 (the first of them is what
    POSTER_FAST_TRITON_CONFIGS=first runs), and EXCLUDED names configs that exist."""
    for name in TUNED:
        for dtype in (F32, F16, BF16):
            for arch in ARCHS:
                assert kernels.may_pick(name, kernels.first_pick(name, dtype, arch), dtype, arch)
        assert all(0 <= i < len(kernels.CONFIGS[name]) for i in kernels.EXCLUDED.get(name, {})), name


def test_no_config_wastes_warps() -> None:
    """The rows a program owns (the M side of its dots) are at least 16 x num_warps, so no two
    warps compute the same rows; dkdv's query block (the N side of two of its dots) is at least
    32 wherever the config may run on sm_90 (HGMMA n16 is narrow)."""
    rows = {"_fwd_kernel": "BM", "_dq_kernel": "BM", "_dkdv_kernel": "BN"}
    for name, side in rows.items():
        for i, cfg in enumerate(kernels.CONFIGS[name]):
            assert cfg.kwargs[side] >= 16 * cfg.num_warps, f"{name}[{i}]: {cfg}"
    for i, cfg in enumerate(kernels.CONFIGS["_dkdv_kernel"]):
        if cfg.kwargs["BM"] < 32:
            assert not any(kernels.may_pick("_dkdv_kernel", i, dt, 90) for dt in (F32, F16, BF16)), cfg


def test_config_set_switch() -> None:
    """Read at import: "first" leaves the autotuner the first config it may pick for the dtype
    and arch, "all" every config it may pick, anything else is an error naming the variable
    (compiled mode with a stubbed device capability, so no interpreter and no GPU needed)."""
    code = (
        "import importlib, os, torch\n"
        "from poster_fast.ops.triton import kernels\n"
        "torch.cuda.get_device_capability = lambda device=None: (8, 0)\n"
        "q = torch.zeros(1, dtype=torch.float32)\n"
        "for value in ('first', 'all', 'some'):\n"
        "    os.environ['POSTER_FAST_TRITON_CONFIGS'] = value\n"
        "    try:\n"
        "        importlib.reload(kernels)\n"
        "    except ValueError as exc:\n"
        "        print(value, exc)\n"
        "        continue\n"
        "    picked = {}\n"
        "    for name, full in kernels.CONFIGS.items():\n"
        "        tuner = getattr(kernels, name)\n"
        "        assert len(tuner.configs) == len(full)\n"
        "        kept = tuner.early_config_prune(tuner.configs, {'Q': q})\n"
        "        picked[name] = [full.index(c) for c in kept]\n"
        "    print(value, picked)\n"
    )
    env = {key: val for key, val in os.environ.items() if key not in ("TRITON_INTERPRET", "POSTER_FAST_TRITON_CONFIGS")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    pickable = {n: [i for i in range(len(c)) if kernels.may_pick(n, i, F32, 80)] for n, c in kernels.CONFIGS.items()}
    assert lines[0] == "first " + str({n: [kernels.first_pick(n, F32, 80)] for n in kernels.CONFIGS})
    assert lines[1] == "all " + str(pickable)
    assert lines[2].startswith("some POSTER_FAST_TRITON_CONFIGS='some'") and "'all' or 'first'" in lines[2]
