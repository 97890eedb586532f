import os

import pytest
import torch

# Triton kernels run through the interpreter where no CUDA GPU is visible; this must be set
# before the Triton kernels are first imported. On a GPU, tests use each kernel's first autotune
# config (ops/triton/kernels.py reads this); the benchmarks tune.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
else:
    os.environ.setdefault("POSTER_FAST_TRITON_CONFIGS", "first")

# The classes of CPU the suite must pass on, as the facts the code decides by: the bf16 features
# behind `--precision auto` and `--amp auto` (poster_fast.device), and the build of the CPU kernels
# (POSTER_FAST_CPU_ISA). `pytest --cpu-facts CLASS` makes this process see them, whatever the CPU;
# the kernels' build falls back to the best this CPU can run below the class's (said in the header).
CPU_CLASSES: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "generic": (frozenset(), ("generic",)),
    "avx2": (frozenset(), ("avx2", "generic")),
    "avx512": (frozenset(), ("avx512", "avx2", "generic")),
    "avx512_bf16": (frozenset({"avx512_bf16"}), ("avx512", "avx2", "generic")),
    "amx": (frozenset({"amx_bf16", "avx512_bf16"}), ("avx512", "avx2", "generic")),
}

REAL_CPU_FEATURES = pytest.StashKey()
INJECTED_ISA = pytest.StashKey()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--cpu-facts", choices=["host", *CPU_CLASSES], default="host",
                     help="run as on this class of CPU (bf16 features and kernel build); default: this CPU's")


def injected_class(config: pytest.Config) -> str | None:
    name = config.getoption("--cpu-facts")
    return None if name == "host" else name


def _usable_isas() -> list[str]:
    from poster_fast.ops import extension

    return list(torch.ops.poster_fast.cpu_isas()) if extension._C is not None else []


def pytest_configure(config: pytest.Config) -> None:
    name = injected_class(config)
    if name is None:
        return
    from poster_fast import device

    features, isas = CPU_CLASSES[name]
    config.stash[REAL_CPU_FEATURES] = device._cpu_features
    device._cpu_features = lambda: features
    device._cpu_name = lambda: f"injected {name} CPU"
    usable = _usable_isas()
    isa = next((i for i in isas if i in usable), None)
    if isa is not None:
        os.environ["POSTER_FAST_CPU_ISA"] = isa
    config.stash[INJECTED_ISA] = isa or "none (poster_fast._C not built)"


def pytest_report_header(config: pytest.Config) -> str:
    name = injected_class(config)
    if name is None:
        return "cpu facts: this CPU's"
    features = ", ".join(sorted(CPU_CLASSES[name][0])) or "no bf16 features"
    return f"cpu facts: injected {name} ({features}); CPU kernel build {config.stash[INJECTED_ISA]}"


@pytest.fixture
def host_cpu_facts(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """This CPU's own facts for one test, under any --cpu-facts (for tests of the detection)."""
    real = request.config.stash.get(REAL_CPU_FEATURES, None)
    if real is not None:
        from poster_fast import device

        monkeypatch.setattr(device, "_cpu_features", real)
