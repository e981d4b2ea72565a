# The README's commands. Each makes its own virtual environment and installs
# what it needs from this repository's files.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0 is the CPU build; an unpinned torch would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0
# Tests run on 8 simulated CPU devices (tests/conftest.py sets the same flag and
# adds XLA's cheap-compile flags; GLIDE_TEST_FULL_OPT=1 keeps XLA's defaults).
TEST_XLA_FLAGS := --xla_force_host_platform_device_count=8
# pytest-xdist workers: compiling dominates the suite and XLA:CPU compiles on
# one core, so two workers nearly halve it on the 2-core CI machine.
TEST_WORKERS ?= 2

.PHONY: install test test-minimum demo parity clean

$(BIN)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev,data,convert]"
	touch $@

install: $(BIN)/.installed

test: install
	XLA_FLAGS="$(TEST_XLA_FLAGS)" $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup tests

# The embedded default: train the tiny shapes_base model on CPU (it builds the
# glide_shapes dataset on first use), then sample a grid from its EMA export.
DEMO_DIR ?= runs/shapes_base
# Extra flags for train.py, e.g. DEMO_FLAGS=--config.train.num_steps=300
DEMO_FLAGS ?=
DEMO_PROMPTS := "a large red circle in the center" "a large blue square in the center" \
	"a large yellow triangle on the left" "a large green hexagon on the right"

demo: install
	$(BIN)/python train.py --config configs/shapes_base.py --workdir $(DEMO_DIR) $(DEMO_FLAGS)
	$(BIN)/python sample.py --base $(DEMO_DIR) --prompt $(DEMO_PROMPTS) --out $(DEMO_DIR)/demo --seed 0
	@echo "demo grid: $(DEMO_DIR)/demo/grid.png"

# The suite on the oldest versions setup.py allows (.ci/minimum-versions.txt),
# in its own environment.
MIN_VENV ?= .venv-minimum
test-minimum:
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/pip install -q --upgrade pip
	$(MIN_VENV)/bin/pip install -q -c .ci/minimum-versions.txt -e ".[dev,data,convert]"
	$(MIN_VENV)/bin/pip check
	XLA_FLAGS="$(TEST_XLA_FLAGS)" $(MIN_VENV)/bin/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup tests

# The reference outputs of OpenAI's glide-text2im, committed in tests/fixtures
# (tests/fixtures/README.md says how they were made); FIXTURES=DIR reads another copy.
FIXTURES ?= tests/fixtures
parity: install
	$(BIN)/python -m glide_jax.tools.parity $(FIXTURES)

clean:
	rm -rf $(VENV) $(MIN_VENV)
