# `make test` / `make bench` do the whole set-up on a fresh clone.
# PY=python3 uses an existing interpreter as it is (no venv, nothing downloaded: the GPU machine).
VENV   ?= .venv
PY     ?= $(VENV)/bin/python
TORCH  ?= torch==2.13.0
# Triton 3.6.0's CPU interpreter works with numpy < 2.4 (see shared TOOLCHAIN notes).
DEPS   ?= "numpy<2.4" "triton==3.6.0" fvcore pytest pytest-benchmark hypothesis ninja pybind11 setuptools wheel \
          tqdm pillow matplotlib "opencv-python-headless>=4.8" scikit-image \
          safetensors onnx onnxscript onnxruntime import-linter==2.17
PYTEST_ARGS ?=
# Triton runs through its interpreter where no CUDA GPU is visible.
INTERPRET = $$($(PY) -c "import torch; print(0 if torch.cuda.is_available() else 1)")

.PHONY: setup test test-cpu-classes bench wheel-smoke gpu-check-dry-run cuda-build-check clean

ifeq ($(PY),$(VENV)/bin/python)
$(VENV)/bin/python:
	python3 -m venv $(VENV)

$(VENV)/.deps: $(VENV)/bin/python Makefile  # DEPS installed again when they change
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q $(DEPS)
	touch $@

setup: $(VENV)/.deps
endif

setup:
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .

# The suite as on this CPU, then the test files that consulted the CPU's facts (tests/conftest.py
# records them) again with the opposite bf16 verdict (`--cpu-facts flipped`): both sides of every
# `auto` precision choice pass on every machine. `make test-cpu-classes` runs them for each class.
FACTS_LOG = build/cpu-facts-files.txt
CPU_CLASSES ?= generic avx2 avx512 avx512_bf16 amx
test: setup
	TRITON_INTERPRET=$(INTERPRET) $(PY) -m pytest tests -q -ra --cpu-facts-log $(FACTS_LOG) $(PYTEST_ARGS)
	test ! -s $(FACTS_LOG) || TRITON_INTERPRET=$(INTERPRET) $(PY) -m pytest -q -ra --cpu-facts flipped \
		$$(cat $(FACTS_LOG)) $(PYTEST_ARGS)

test-cpu-classes: setup
	for c in $(CPU_CLASSES); do TRITON_INTERPRET=$(INTERPRET) $(PY) -m pytest tests -q -ra --cpu-facts $$c $(PYTEST_ARGS) || exit 1; done

bench: setup
	TRITON_INTERPRET=$(INTERPRET) $(PY) -m poster_fast bench $(BENCH_ARGS)

# The package as a user gets it: the sdist, a wheel built from the sdist against $(PY)'s torch;
# pip's default isolated build of the sdist stopping at once with the command that works; the
# wheel installed with its declared core dependencies into a fresh venv beside the same torch
# release (the CPU torch 2.13.0 with the default venv), and tests/smoke_installed.py run there
# from outside the source tree. Everything under $(SMOKE), logs included.
SMOKE ?= build/smoke
BUILT_TORCH = $$($(PY) -c "import torch; print(torch.__version__.split('+')[0])")
ifeq ($(PY),$(VENV)/bin/python)
wheel-smoke: $(VENV)/.deps
endif
wheel-smoke:
	$(PY) -m pip show -q build >/dev/null 2>&1 || $(PY) -m pip install -q build
	rm -rf $(SMOKE) && mkdir -p $(SMOKE)
	$(PY) -m build --no-isolation --outdir $(SMOKE)/dist . > $(SMOKE)/build.log 2>&1 \
		|| { tail -30 $(SMOKE)/build.log; exit 1; }
	! $(PY) -m pip wheel --no-deps -w $(SMOKE)/isolated $(SMOKE)/dist/*.tar.gz > $(SMOKE)/isolated.log 2>&1
	grep -A5 "cannot build without torch" $(SMOKE)/isolated.log
	grep -q "pip install --no-build-isolation \.$$" $(SMOKE)/isolated.log
	python3 -m venv $(SMOKE)/venv
	$(SMOKE)/venv/bin/python -m pip install -q torch==$(BUILT_TORCH) $(SMOKE)/dist/*.whl
	cd $(SMOKE) && venv/bin/python $(abspath tests/smoke_installed.py)

# benchmarks/gpu_check.sh rehearsed on the CPU (its own CPU-only build, Triton interpreter, tiny
# sizes); fails when a step fails. Logs and JSON under $OUT (default ./bench-out).
# GPU_CHECK_ARGS="--fault triton": that backend crashes its bench process; passes when only it did.
GPU_CHECK_ARGS ?=
ifeq ($(PY),$(VENV)/bin/python)
gpu-check-dry-run: $(VENV)/.deps
endif
gpu-check-dry-run:
	PY=$(PY) bash benchmarks/gpu_check.sh --dry-run $(GPU_CHECK_ARGS)

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
		"import torch, poster_fast._C as C; assert C.with_cuda, 'built without CUDA'; print('poster_fast._C with CUDA: ok')"
	cd build/cuda-pkg && $(abspath $(CUDA_VENV))/bin/python -m pytest ../../tests/test_extension.py ../../tests/ops ../../tests/test_ops.py -q -ra -p no:cacheprovider

# Registers, spills and shared memory of every Triton kernel x autotune config x dtype for sm_80
# and sm_90, and of the CUDA kernels (nvcc -Xptxas -v; skipped when NVCC is missing), compiled offline:
# no GPU needed. Fails where a config the autotuner may pick spills or overflows shared memory.
.PHONY: kernel-report
kernel-report: setup
	$(PY) benchmarks/kernel_report.py --nvcc $(NVCC) $(KERNEL_REPORT_ARGS)

clean:
	rm -rf build *.egg-info poster_fast/*.so

# How many realistic mutations (tests/mutation/mutations.py) the tests catch: each applied in a
# scratch copy of the repository, its tests run; csrc/ mutations rebuild the copy's extension.
# Slow (tens of minutes on 2 cores): not part of `make test` or CI. MUTATION_ARGS: see
# `python tests/mutation/run.py --help` (--only NAME ..., --report FILE, --keep).
.PHONY: mutation-check
mutation-check: setup
	TRITON_INTERPRET=$(INTERPRET) $(PY) tests/mutation/run.py $(MUTATION_ARGS)

# The CUDA kernels compiled for the CPU and run in an emulation of the CUDA constructs they use
# (tests/cuda_emulation): forward and backward on POSTER's shapes in fp32/fp16/bf16 against a
# float64 reference, with race, bounds and initialisation checks. g++ only, no GPU, no nvcc.
# Two CUDA-only syntaxes are rewritten first: <<<...>>> launches and `extern __shared__` arrays.
EMU_DIR     ?= build/cuda-emulation
EMU_KERNELS ?= csrc/cuda/wmca_kernels.cu
EMU_ARGS    ?=
EMU_CXX     ?= g++
EMU_FLAGS    = -std=c++20 -O2 -g -Wall -Wextra -Itests/cuda_emulation/include -Itests/cuda_emulation -Icsrc/cuda
EMU_KASAN    = -Wno-unknown-pragmas -fno-tree-sra -fno-tree-sink -fsanitize=kernel-address --param asan-instrumentation-with-call-threshold=0 \
               --param asan-stack=0 --param asan-globals=0

.PHONY: cuda-emulation
cuda-emulation:
	mkdir -p $(EMU_DIR)
	{ echo '#line 1 "$(EMU_KERNELS)"'; sed -E \
		-e 's/extern __shared__ (__align__\([0-9]+\) )?(.+) ([A-Za-z_][A-Za-z0-9_]*)\[\];/\2* \3 = reinterpret_cast<\2*>(::emu::dynamic_shared());/' \
		-e 's/([A-Za-z_][A-Za-z0-9_]*(<[^<>;]*>)?)<<</\1 | ::emu::launch_config("\1", /g' \
		-e 's/>>>\(/) | ::emu::launch_args(/g' $(EMU_KERNELS); } > $(EMU_DIR)/kernels.cpp
	$(EMU_CXX) $(EMU_FLAGS) $(EMU_KASAN) -c $(EMU_DIR)/kernels.cpp -o $(EMU_DIR)/kernels.o
	$(EMU_CXX) $(EMU_FLAGS) -c tests/cuda_emulation/emu_runtime.cpp -o $(EMU_DIR)/emu_runtime.o
	$(EMU_CXX) $(EMU_FLAGS) -c tests/cuda_emulation/driver.cpp -o $(EMU_DIR)/driver.o
	$(EMU_CXX) $(EMU_DIR)/kernels.o $(EMU_DIR)/emu_runtime.o $(EMU_DIR)/driver.o -o $(EMU_DIR)/driver
	$(EMU_DIR)/driver $(EMU_ARGS)
