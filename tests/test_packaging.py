"""Packaging: the extras in pyproject.toml match what the commands check (poster_fast/extras.py)
and what they import; a missing extra is named before any work; one version; setup.py's message
without torch. Building the sdist and wheel and installing it in a fresh venv with the core
dependencies only (where `budget` and `bench` run) is `make wheel-smoke` (CI), not this suite.

Modules are "uninstalled" in a subprocess by a PathFinder that finds nothing for them, so
importlib.util.find_spec returns None and importing them raises ModuleNotFoundError, as when
they are not installed at all.
"""
from __future__ import annotations

import importlib.metadata as metadata
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import poster_fast
from poster_fast import extras
from poster_fast.commands.cli import main

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

HIDE = """\
import importlib.machinery, sys
HIDDEN = set(sys.argv[1].split(",")) - {""}

class Hidden(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return None if name.partition(".")[0] in HIDDEN else super().find_spec(name, path, target)

sys.meta_path = [Hidden if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
"""


def run_hidden(hidden: set[str], code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter in which the modules `hidden` are not installed."""
    return subprocess.run([sys.executable, "-c", HIDE + code, ",".join(sorted(hidden)), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def test_extras_declare_what_the_commands_check():
    declared = PROJECT["project"]["optional-dependencies"]
    for extra, needs in extras.NEEDS.items():
        assert names(declared[extra]) == {canonicalize_name(dists[0]) for _, dists in needs}, extra
    assert names(PROJECT["project"]["dependencies"]) == {"torch", "numpy", "safetensors"}
    assert {"predict", "train", "bench", "onnx", "triton", "test", "all"} <= set(declared)
    everything = {e for r in declared["all"] for e in Requirement(r).extras}
    assert everything == set(declared) - {"test", "all"}


def test_require_names_what_is_missing(monkeypatch):
    found = {"PIL", "tqdm", "skimage", "matplotlib"}  # cv2 missing: scikit-image stands in
    monkeypatch.setattr(extras, "find_spec", lambda name: object() if name in found else None)
    extras.require("predict")
    found -= {"skimage", "matplotlib"}
    assert extras.missing("predict") == ["opencv-python-headless (or scikit-image)"]
    with pytest.raises(extras.MissingExtra) as err:
        extras.require("train")
    assert str(err.value) == "matplotlib is not installed: pip install 'poster_fast[train]'"
    found.clear()
    with pytest.raises(extras.MissingExtra, match=r"^pillow, tqdm, matplotlib are not installed: "):
        extras.require("train")


@pytest.mark.parametrize("argv, hidden, message", [
    (["predict", "photo.jpg", "--allow-random"], {"cv2", "skimage"},
     "poster-fast predict: error: opencv-python-headless (or scikit-image) is not installed: "
     "pip install 'poster_fast[predict]'"),
    (["train", "--dataset", "rafdb", "--data", "nonexistent"], {"matplotlib"},
     "poster-fast train: error: matplotlib is not installed: pip install 'poster_fast[train]'"),
    (["evaluate", "--checkpoint", "nonexistent.pt", "--data", "nonexistent"], {"tqdm"},
     "poster-fast evaluate: error: tqdm is not installed: pip install 'poster_fast[train]'"),
])
def test_missing_extra_stops_the_command_first(argv, hidden, message):
    """One line, exit status 2, before any work: no data checked, torch not even imported."""
    proc = run_hidden(hidden, "from poster_fast.commands.cli import main\n"
                              "rc = main(sys.argv[2:])\nprint('torch' in sys.modules)\nsys.exit(rc)", *argv)
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "False\n", message + "\n")


def closure(extra: str | None) -> set[str]:
    """The distributions installed with poster_fast's core dependencies (and `extra`'s), and
    everything they require in turn (with the extras they ask for)."""
    todo, done, dists = [("poster_fast", ""), ("poster_fast", extra or "")], set(), set()
    while todo:
        dist, dist_extra = todo.pop()
        if (dist, dist_extra) in done:
            continue
        done.add((dist, dist_extra))
        try:
            requires = metadata.requires(dist) or []
        except metadata.PackageNotFoundError:
            pytest.skip(f"{dist}, which poster_fast's {extra or 'core'} dependencies bring, is not installed")
        dists.add(canonicalize_name(dist))
        for req in map(Requirement, requires):
            if req.marker is None or req.marker.evaluate({"extra": dist_extra}):
                todo += [(req.name, e) for e in ("", *req.extras)]
    return dists


def uninstalled_except(extra: str | None) -> set[str]:
    """Every installed top-level module that poster_fast's core (and `extra`) would not bring."""
    keep = closure(extra)
    return {module for module, dists in metadata.packages_distributions().items()
            if not any(canonicalize_name(d) in keep for d in dists)} - set(sys.stdlib_module_names) - {"poster_fast"}


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    skdata = pytest.importorskip("skimage.data")
    from PIL import Image

    path = tmp_path_factory.mktemp("photo") / "astronaut.jpg"
    Image.fromarray(skdata.astronaut()).save(path)
    return path


def test_predict_needs_only_its_extra(photo, tmp_path):
    hidden = uninstalled_except("predict")
    assert {"matplotlib", "fvcore", "skimage"} & hidden
    proc = run_hidden(hidden, "from poster_fast.commands.cli import main\nsys.exit(main(sys.argv[2:]))",
                      "predict", str(photo), "--allow-random", "--quiet", "--device", "cpu",
                      "--json", str(tmp_path / "out.json"), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out.json").is_file()


def test_train_and_evaluate_need_only_their_extra(tmp_path):
    from test_train import TRAIN_ARGS, make_folder

    data = make_folder(tmp_path / "data", {"train": 2, "valid": 2})
    hidden = uninstalled_except("train")
    assert {"cv2", "fvcore", "skimage"} & hidden
    code = ("from poster_fast.commands.cli import main\n"
            "sys.exit(main(sys.argv[2:sys.argv.index('--then')]) or main(sys.argv[sys.argv.index('--then') + 1:]))")
    out = tmp_path / "run"
    proc = run_hidden(hidden, code, "train", "--data", str(data), "--out", str(out), "--epochs", "1",
                      "--max-steps", "1", *TRAIN_ARGS, "--then", "evaluate", "--data", str(data),
                      "--checkpoint", str(out / "best.pt"), "--workers", "0", "--image-size", "64",
                      "--out", str(tmp_path / "eval"), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "eval" / "confusion_valid.png").is_file()


def test_one_version(capsys):
    assert "version" in PROJECT["project"]["dynamic"] and "version" not in PROJECT["project"]
    assert PROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "poster_fast.version.__version__"}
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"poster-fast {poster_fast.__version__}\n"
    assert metadata.version("poster_fast") == poster_fast.__version__


def test_setup_without_torch_says_what_works():
    """What pip's default isolated build prints (inside its 'Getting requirements to build wheel'
    box): setup.py stops at once, before setup(), with the command that works."""
    proc = run_hidden({"torch"}, "import runpy\nsys.argv = ['setup.py', 'egg_info']\n"
                                 "runpy.run_path('setup.py', run_name='__main__')")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("poster_fast: cannot build without torch.")
    assert "    pip install --no-build-isolation .\n" in proc.stderr
    assert proc.stderr.strip() in (ROOT / "docs" / "install.md").read_text()  # quoted there in full
