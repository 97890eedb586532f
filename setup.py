"""Builds poster_fast._C: CPU kernels always, CUDA kernels when torch and nvcc allow.

The extension is compiled against the torch it will run with, so torch must be importable
here; it is not a build requirement (pyproject.toml says why). Without it, as in pip's default
isolated build, this stops at once with NO_TORCH, which gives the command that works.

POSTER_FAST_CUDA=1 forces the CUDA build (error if impossible), =0 disables it; unset means
"when torch is a CUDA build and nvcc is found". CUDA_HOME defaults to /usr/local/cuda when that
toolkit exists (torch would otherwise guess /usr/local from an nvcc wrapper and miss the headers).
"""
from __future__ import annotations

import glob
import os
import shutil
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
NO_TORCH = """\
poster_fast: cannot build without torch. Its C++ extension is compiled against the torch it
will run with, and pip's default isolated build environment cannot see an installed torch.
Install torch first (the CPU or CUDA build you want), then build against it:
    pip install --no-build-isolation .
(likewise `pip wheel --no-build-isolation .` or `python -m build --no-isolation`; the build
also needs setuptools>=70.1 installed beside torch)"""


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        sys.exit(NO_TORCH)


def _want_cuda() -> bool:
    import torch

    flag = os.environ.get("POSTER_FAST_CUDA", "")
    if flag == "0":
        return False
    if not os.environ.get("CUDA_HOME") and os.path.exists("/usr/local/cuda/bin/nvcc"):
        os.environ["CUDA_HOME"] = "/usr/local/cuda"
    possible = torch.version.cuda is not None and (
        bool(os.environ.get("CUDA_HOME")) or shutil.which("nvcc") is not None)
    if flag == "1" and not possible:
        raise RuntimeError("POSTER_FAST_CUDA=1 but torch is not a CUDA build or nvcc is missing")
    return possible


def _extension():
    from torch.utils import cpp_extension

    rel = lambda pattern: sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))
    sources = rel("csrc/*.cpp") + rel("csrc/cpu/*.cpp")
    # -Wno-psabi: the generic CPU kernels pass wide vector values between internal functions.
    cxx = ["-O3", "-g0", "-fopenmp", "-std=c++20", "-ffp-contract=fast", "-Wno-psabi"]
    kwargs = dict(extra_link_args=["-fopenmp"], include_dirs=[os.path.join(ROOT, "csrc")])
    if _want_cuda():
        if "TORCH_CUDA_ARCH_LIST" not in os.environ:
            import torch

            if not torch.cuda.is_available():
                os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
        sources += rel("csrc/cuda/*.cu") + rel("csrc/cuda/*.cpp")
        nvcc = ["-O3", "-std=c++17", "--use_fast_math", "-lineinfo"]
        return cpp_extension.CUDAExtension(
            "poster_fast._C", sources, extra_compile_args={"cxx": cxx + ["-DWITH_CUDA"], "nvcc": nvcc},
            **kwargs)
    return cpp_extension.CppExtension("poster_fast._C", sources, extra_compile_args={"cxx": cxx}, **kwargs)


def _build_ext():
    from torch.utils.cpp_extension import BuildExtension

    return BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)


_require_torch()
setup(
    packages=find_packages(include=["poster_fast", "poster_fast.*"]),
    ext_modules=[_extension()],
    cmdclass={"build_ext": _build_ext()},
)
