"""Smoke test of an installed poster_fast, run by `make wheel-smoke` from outside the source tree
in a fresh venv that holds the wheel, the CPU torch and the core dependencies only.

It checks that the installed copy (not a source tree) is imported, that its compiled extension
loads and runs the fused CPU op (forward and all gradients against the reference, by the test
suite's policy in tests/wmca_utils.py) and the whole model, that the command line answers
`--version` and `predict --help` with the core dependencies only, that `predict` names the
extra it needs, and that `budget` and `bench` run without extras. Not collected by pytest (no test_ prefix): `python tests/smoke_installed.py`.
"""
from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import sysconfig
from importlib.util import find_spec
from pathlib import Path

import torch

import poster_fast
from poster_fast import POSTERV2, ops
from wmca_utils import Case, assert_within_reference_error, check_backend, make_inputs  # tests/


def poster_fast_cli(*args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("poster-fast")
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120)


def check_installed_copy() -> None:
    site = Path(sysconfig.get_paths()["platlib"]).resolve()
    where = Path(poster_fast.__file__).resolve()
    assert where.is_relative_to(site), f"imported {where}, not the copy installed in {site}"
    assert poster_fast.__version__ == importlib.metadata.version("poster_fast")
    from poster_fast import _C  # noqa: F401  (ImportError here: the wheel has no usable extension)


def check_face_detector_shipped() -> None:
    """The YuNet model file is in the installed copy, with its license and its source, whose sha256
    it matches (read as files: poster_fast.faces needs the predict extra)."""
    import hashlib

    folder = Path(poster_fast.__file__).parent / "faces" / "models"
    digest = hashlib.sha256((folder / "yunet_s_640_640.onnx").read_bytes()).hexdigest()
    assert digest in (folder / "SOURCE").read_text() and "Apache License" in (folder / "LICENSE").read_text()


def check_fused_op() -> None:
    case = Case(batch=2, windows=4, heads=2, window=(7, 7), head_dim=32)
    for dtype in (torch.float32, torch.bfloat16):
        check_backend("cpu", case, dtype)
    q, k, v, table = (t.detach() for t in make_inputs(case, torch.float32))
    assert ops.explain(q, k, v, table, case.window)["chosen"] == "cpu"


def check_model() -> None:
    """The whole model with the fused op, by the same policy: its logits' error against float64
    within 3x that of the float32 reference model."""
    model = POSTERV2(num_classes=7, attn_backend="cpu").eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        fused = model(x)
        model.attn_backend = "reference"
        same = model(x)
        exact = model.double()(x.double())
    assert fused.shape == (2, 7)
    assert_within_reference_error([fused], [exact], [same], names=("logits",))


def check_command_line() -> None:
    version = poster_fast_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"poster-fast {poster_fast.__version__}", version
    help_ = poster_fast_cli("predict", "--help")
    assert help_.returncode == 0 and help_.stdout.startswith("usage: poster-fast predict"), help_
    assert find_spec("PIL") is None, "this venv should hold the core dependencies only"
    refused = poster_fast_cli("predict", "photo.jpg")
    assert refused.returncode == 2 and refused.stdout == "", refused
    assert refused.stderr.strip().splitlines() == [
        "poster-fast predict: error: pillow, tqdm, opencv-python-headless (or scikit-image) are not "
        "installed: pip install 'poster_fast[predict]'"], refused


def check_commands_without_extras() -> None:
    """`budget` and a tiny `bench` need nothing beyond the core dependencies."""
    budget = poster_fast_cli("budget")
    assert budget.returncode == 0 and "thop MACs" in budget.stdout, budget
    assert "fvcore is not installed" in budget.stdout, budget  # the [bench] extra is not here
    bench = poster_fast_cli("bench", "--device", "cpu", "--levels", "3", "--batch", "1", "--sections", "ops",
                            "--backends", "reference,cpu", "--warmup", "0", "--iters", "1", "--json", "bench.json")
    assert bench.returncode == 0, bench
    rows = json.loads(Path("bench.json").read_text())["ops"]
    assert {(r["backend"], r["status"]) for r in rows} == {("cpu", "ok"), ("reference", "ok")}, rows


def main() -> int:
    for check in (check_installed_copy, check_face_detector_shipped, check_fused_op, check_model, check_command_line,
                  check_commands_without_extras):
        check()
        print(f"{check.__name__}: ok", flush=True)
    print(f"poster_fast {poster_fast.__version__} installed at {Path(poster_fast.__file__).parent}: "
          f"smoke test passed (torch {torch.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
