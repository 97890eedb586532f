# `make test` / `make bench` do the whole set-up on a fresh clone.
# PY=python3 uses an existing interpreter as it is (no venv, nothing downloaded: the GPU machine).
VENV   ?= .venv
PY     ?= $(VENV)/bin/python
TORCH  ?= torch==2.13.0
# Triton 3.6.0's CPU interpreter works with numpy < 2.4 (see shared TOOLCHAIN notes).
DEPS   ?= "numpy<2.4" "triton==3.6.0" fvcore pytest pytest-benchmark hypothesis ninja pybind11 setuptools wheel \
          tqdm pillow matplotlib "opencv-python-headless<5" scikit-image
PYTEST_ARGS ?=
# Triton runs through its interpreter where no CUDA GPU is visible.
INTERPRET = $$($(PY) -c "import torch; print(0 if torch.cuda.is_available() else 1)")

.PHONY: setup test bench gpu-check-dry-run cuda-build-check clean

ifeq ($(PY),$(VENV)/bin/python)
$(VENV)/bin/python:
	python3 -m venv $(VENV)

$(VENV)/.deps: $(VENV)/bin/python
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q $(DEPS)
	touch $@

setup: $(VENV)/.deps
endif

setup:
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .

test: setup
	TRITON_INTERPRET=$(INTERPRET) $(PY) -m pytest tests -q -ra $(PYTEST_ARGS)

bench: setup
	TRITON_INTERPRET=$(INTERPRET) $(PY) -m poster_fast bench $(BENCH_ARGS)

# benchmarks/gpu_check.sh rehearsed on the CPU (its own CPU-only build, Triton interpreter, tiny
# sizes); fails when a step fails. Logs and JSON under $OUT (default ./bench-out).
ifeq ($(PY),$(VENV)/bin/python)
gpu-check-dry-run: $(VENV)/.deps
endif
gpu-check-dry-run:
	PY=$(PY) bash benchmarks/gpu_check.sh --dry-run

# CUDA compile check without a GPU: a second venv with a CUDA torch (2.14.1, ~5.5 GB) builds
# poster_fast._C with the CUDA kernels for sm_80 and sm_90 out of tree (build/cuda-*), then runs
# tests/test_extension.py against that build on the CPU (CUDA tests skip without a GPU).
CUDA_VENV ?= .venv-cuda
CUDA_HOME ?= /usr/local/cuda
NVCC      ?= $(CUDA_HOME)/bin/nvcc
CUDA_ARCHS = -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90

$(CUDA_VENV)/.deps:
	test -x $(CUDA_VENV)/bin/python || python3 -m venv $(CUDA_VENV)
	$(CUDA_VENV)/bin/python -m pip install -q torch==2.14.1 "numpy<2.4" pytest ninja pybind11 setuptools wheel
	touch $@

cuda-build-check: $(CUDA_VENV)/.deps
	mkdir -p build && for f in csrc/cuda/*.cu; do $(NVCC) -std=c++17 -O3 --use_fast_math $(CUDA_ARCHS) -c $$f -o build/nvcc-check.o || exit 1; done
	rm -rf build/cuda-temp build/cuda-lib build/cuda-pkg
	CUDA_HOME=$(CUDA_HOME) POSTER_FAST_CUDA=1 TORCH_CUDA_ARCH_LIST="8.0;9.0" $(CUDA_VENV)/bin/python \
		setup.py -q build_ext --build-temp build/cuda-temp --build-lib build/cuda-lib
	mkdir -p build/cuda-pkg && cp -r poster_fast build/cuda-pkg/ && rm -f build/cuda-pkg/poster_fast/*.so
	cp build/cuda-lib/poster_fast/_C*.so build/cuda-pkg/poster_fast/
	cd build/cuda-pkg && $(abspath $(CUDA_VENV))/bin/python -c \
		"import poster_fast._C as C; assert C.with_cuda, 'built without CUDA'; print('poster_fast._C with CUDA: ok')"
	cd build/cuda-pkg && $(abspath $(CUDA_VENV))/bin/python -m pytest ../../tests/test_extension.py ../../tests/ops ../../tests/test_ops.py -q -ra -p no:cacheprovider

clean:
	rm -rf build *.egg-info poster_fast/*.so
