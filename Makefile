# The two commands of the README. Both install into .venv first (idempotent; re-runs when pyproject.toml changes).
#   make demo   generate the demo data, train and test Fastflow2D with the stock anomalib CLI, print the metrics
#   make test   lint, type-check, run the test suite and build the docs site strictly (what CI runs)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch/torchvision pair installed first; override for another platform, e.g. TORCH_SPEC="torch torchvision".
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# Nothing here needs the model hub: fail at once instead of retrying a download.
export HF_HUB_OFFLINE := 1

.PHONY: install demo test clean

install: $(VENV)/.installed

# The start-up hook is copied into site-packages at install, so a change to it reinstalls too.
$(VENV)/.installed: pyproject.toml anomalib_fastflow2d/_hook.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev,docs]"
	touch $@

demo: install
	$(BIN)/fastflow2d-demo-data --root datasets/demo
	$(BIN)/anomalib train --config configs/demo.yaml

test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mkdocs build --strict --site-dir site
	$(BIN)/python -m pytest

clean:
	rm -rf datasets/demo results
