"""What each command needs beyond the core dependencies (torch, numpy, safetensors), checked
before it starts.

`pip install poster_fast` is enough for the model, the ops, `bench` and `budget`; `predict`,
`train` and `evaluate` read images, `export --onnx` needs onnx, onnxscript and onnxruntime, and
the Hugging Face Hub needs huggingface_hub: each comes in an extra (pyproject.toml's
optional-dependencies, which tests/test_packaging.py keeps in step with NEEDS). `require(extra)`
only looks modules up (importlib.util.find_spec), imports none, and names the extra that
installs what is missing. Standard library only.
"""
from __future__ import annotations

from importlib.util import find_spec

from .errors import UsageError

# extra -> what it must provide: (modules, any one of which will do; the distributions that
# provide them, the first one being the one the extra installs)
NEEDS: dict[str, tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]] = {
    "predict": ((("PIL",), ("pillow",)),
                (("tqdm",), ("tqdm",)),
                (("cv2", "skimage"), ("opencv-python-headless", "scikit-image"))),
    "train": ((("PIL",), ("pillow",)),
              (("tqdm",), ("tqdm",)),
              (("matplotlib",), ("matplotlib",))),
    "onnx": ((("onnx",), ("onnx",)),
             (("onnxscript",), ("onnxscript",)),
             (("onnxruntime",), ("onnxruntime",))),
    "hub": ((("huggingface_hub",), ("huggingface_hub",)),),
}


class MissingExtra(UsageError):
    """A command's optional dependency is not installed."""


def missing(extra: str) -> list[str]:
    """What `extra` provides and cannot be found, e.g. ["matplotlib", "opencv-python-headless (or
    scikit-image)"]."""
    return [dists[0] + "".join(f" (or {d})" for d in dists[1:]) for modules, dists in NEEDS[extra]
            if not any(find_spec(m) is not None for m in modules)]


def require(extra: str) -> None:
    """Raise MissingExtra (one line: what is missing, the pip command) unless `extra` is there."""
    absent = missing(extra)
    if absent:
        raise MissingExtra(f"{', '.join(absent)} {'is' if len(absent) == 1 else 'are'} not installed: "
                           f"pip install 'poster_fast[{extra}]'")
