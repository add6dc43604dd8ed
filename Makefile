# `make demo` and `make test` each set everything up on a fresh clone (venv, torch, the package).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build by default (CI, laptops). On a GPU box: make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)   # first, so no dependency pulls a multi-GB CUDA build
	$(PY) -m pip install -q -e ".[dev]"
	# DeepSpeed ships as an sdist whose build imports torch: build it against the torch above (no isolated build
	# env, which would fetch a CUDA torch) and without compiling its ops (JIT on demand; the CPU tests need none).
	$(PY) -m pip install -q setuptools wheel
	DS_BUILD_OPS=0 $(PY) -m pip install -q --no-build-isolation "deepspeed>=0.17"
	touch $(STAMP)

demo: install
	$(VENV)/bin/rlhf-hf demo

test: install
	$(PY) -m pytest

test-slow: install
	$(PY) -m pytest -m slow

lint: install
	$(VENV)/bin/ruff check rlhf_hf recipes tests benchmarks
	$(VENV)/bin/ruff format --check rlhf_hf recipes tests benchmarks

format: install
	$(VENV)/bin/ruff format rlhf_hf recipes tests benchmarks
	$(VENV)/bin/ruff check --fix rlhf_hf recipes tests benchmarks

bench: install
	$(PY) benchmarks/reward.py

clean:
	rm -rf runs .cache .pytest_cache
