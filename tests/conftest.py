import os
from pathlib import Path

import pytest
import torch

# Triton kernels run through the interpreter where no CUDA GPU is visible; this must be set
# before the Triton kernels are first imported. On a GPU, tests use the first autotune config each
# kernel may pick for the dtype and arch (ops/triton/kernels.py reads this); the benchmarks tune.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
else:
    os.environ.setdefault("POSTER_FAST_TRITON_CONFIGS", "first")

# The classes of CPU the suite must pass on, as the facts the code decides by: the bf16 features
# behind `--precision auto` and `--amp auto` (poster_fast.device), and the build of the CPU kernels
# (POSTER_FAST_CPU_ISA). `pytest --cpu-facts CLASS` makes this process see them, whatever the CPU
# (subprocesses see the CPU's own bf16 features); the kernels' build falls back to the best one
# this CPU can run below the class's (the report header says which).
CPU_CLASSES: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {
    "generic": (frozenset(), ("generic",)),
    "avx2": (frozenset(), ("avx2", "generic")),
    "avx512": (frozenset(), ("avx512", "avx2", "generic")),
    "avx512_bf16": (frozenset({"avx512_bf16"}), ("avx512", "avx2", "generic")),
    "amx": (frozenset({"amx_bf16", "avx512_bf16"}), ("avx512", "avx2", "generic")),
}
# "flipped": this CPU's kernel build with the opposite bf16 verdict (native <-> emulated), so that
# one machine tests both sides of every `auto` choice.
FLIPPED = "flipped"
CONSULTED = pytest.StashKey()
INJECTED = pytest.StashKey()
REAL_CPU_FEATURES = pytest.StashKey()
COLLECTING = pytest.StashKey()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--cpu-facts", choices=["host", FLIPPED, *CPU_CLASSES], default="host",
                     help="run as on this class of CPU (bf16 features and kernel build); default: this CPU's")
    parser.addoption("--cpu-facts-log", metavar="PATH",
                     help="write the test files whose tests consulted the CPU's facts to PATH, one a line")


def _usable_isas() -> list[str]:
    from poster_fast.ops import extension

    return list(torch.ops.poster_fast.cpu_isas()) if extension._C is not None else []


def _flipped(features: frozenset[str]) -> str:
    from poster_fast import device

    native = bool(features & set(device.CPU_BF16_FEATURES))
    isa = (_usable_isas() or ["generic"])[0]
    same_isa = [n for n, (_, isas) in CPU_CLASSES.items() if isas[0] == isa] or ["avx2"]
    return next((n for n in same_isa if bool(CPU_CLASSES[n][0]) != native),
                "avx512" if native else "amx")


def pytest_configure(config: pytest.Config) -> None:
    from poster_fast import device

    real = device._cpu_features
    config.stash[REAL_CPU_FEATURES] = real
    config.stash[CONSULTED] = consulted = set()
    name = config.getoption("--cpu-facts")
    if name == FLIPPED:
        name = _flipped(real())
    features = None
    if name != "host":
        features, isas = CPU_CLASSES[name]
        device._cpu_name = lambda: f"injected {name} CPU"
        isa = next((i for i in isas if i in _usable_isas()), None)
        if isa is not None:
            os.environ["POSTER_FAST_CPU_ISA"] = isa
        config.stash[INJECTED] = f"{name} ({', '.join(sorted(features)) or 'no bf16 features'}); " \
                                 f"CPU kernel build {isa or 'none (poster_fast._C not built)'}"

    def cpu_features() -> frozenset[str]:
        running = os.environ.get("PYTEST_CURRENT_TEST")
        consulted.add(running.split("::")[0] if running else config.stash[COLLECTING])
        return real() if features is None else features

    device._cpu_features = cpu_features


def pytest_collectstart(collector: pytest.Collector) -> None:
    if isinstance(collector, pytest.Module):  # a test file's import may consult the facts too
        collector.config.stash[COLLECTING] = collector.nodeid


def pytest_report_header(config: pytest.Config) -> str:
    return f"cpu facts: injected {config.stash[INJECTED]}" if INJECTED in config.stash else \
        "cpu facts: this CPU's"


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = session.config.getoption("--cpu-facts-log")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("".join(f"{f}\n" for f in sorted(session.config.stash[CONSULTED])))


@pytest.fixture
def host_cpu_facts(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """This CPU's own facts for one test, under any --cpu-facts (for tests of the detection)."""
    from poster_fast import device

    monkeypatch.setattr(device, "_cpu_features", request.config.stash[REAL_CPU_FEATURES])
