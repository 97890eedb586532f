"""Triton kernels below the op: every autotune config, forward and all gradients against the
fp64-anchored policy (CPU interpreter on small shapes; GPU on POSTER's three level shapes), the
d_table tiling and reduction, the float32 table, 3xTF32 accuracy and the config-set switch.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
    """Each config the autotuner may pick on this GPU for this dtype, one at a time (the first
    config of each list is what the other GPU tests use)."""
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

def test_first_config_is_never_excluded() -> None:
    """POSTER_FAST_TRITON_CONFIGS=first (and the interpreter) run the first config unpruned."""
    for name, per_config in kernels.EXCLUDED.items():
        assert 0 not in per_config, name
        assert all(0 <= i < len(kernels.CONFIGS[name]) for i in per_config), name


def test_config_set_switch() -> None:
    """Read at import: "first" gives each autotuner one config, "all" the full lists, anything
    else an error naming the variable (compiled mode, so no interpreter and no GPU needed)."""
    code = (
        "import importlib, os\n"
        "from poster_fast.ops.triton import kernels\n"
        "names = ('_fwd_kernel', '_dkdv_kernel', '_dq_kernel', '_dtable_kernel')\n"
        "for value in ('first', 'all', 'some'):\n"
        "    os.environ['POSTER_FAST_TRITON_CONFIGS'] = value\n"
        "    try:\n"
        "        importlib.reload(kernels)\n"
        "        print(value, [len(getattr(kernels, n).configs) for n in names])\n"
        "    except ValueError as exc:\n"
        "        print(value, exc)\n"
    )
    env = {key: val for key, val in os.environ.items() if key not in ("TRITON_INTERPRET", "POSTER_FAST_TRITON_CONFIGS")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "first [1, 1, 1, 1]"
    assert lines[1] == "all " + str([len(kernels.CONFIGS[n]) for n in TUNED])
    assert lines[2].startswith("some POSTER_FAST_TRITON_CONFIGS='some'") and "'all' or 'first'" in lines[2]
