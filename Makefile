# `make test` / `make bench` do the whole set-up on a fresh clone.
# PY=python3 uses an existing interpreter as it is (no venv, nothing downloaded: the GPU machine).
VENV   ?= .venv
PY     ?= $(VENV)/bin/python
TORCH  ?= torch==2.13.0
# Triton 3.6.0's CPU interpreter works with numpy < 2.4 (see shared TOOLCHAIN notes).
DEPS   ?= "numpy<2.4" "triton==3.6.0" fvcore pytest pytest-benchmark ninja pybind11 setuptools wheel
PYTEST_ARGS ?=
# Triton runs through its interpreter where no CUDA GPU is visible.
INTERPRET = $$($(PY) -c "import torch; print(0 if torch.cuda.is_available() else 1)")

.PHONY: setup test bench cuda-build-check clean

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

clean:
	rm -rf build *.egg-info poster_fast/*.so
