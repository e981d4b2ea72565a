# The README's commands. Each makes its own virtual environment and installs
# what it needs from this repository's files.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0 is the CPU build; an unpinned torch would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
export XLA_FLAGS := --xla_force_host_platform_device_count=8

.PHONY: install test parity clean

$(BIN)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev,data,convert]"
	touch $@

install: $(BIN)/.installed

test: install
	$(BIN)/python -m pytest -q tests

parity: install
	$(BIN)/python -m glide_jax.tools.parity ../shared/fixtures/glide_text2im

clean:
	rm -rf $(VENV)
