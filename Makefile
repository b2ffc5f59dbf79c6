# Two commands on a fresh machine: `make demo` and `make test`. Both set themselves up.
# Needs only Python 3.11+, Node.js 20 and npm.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP_STAMP  := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: install lint typecheck test demo emulators clean

install: $(PIP_STAMP) $(NODE_STAMP)

$(PY):
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)

$(PIP_STAMP): $(PY) requirements.txt requirements-dev.txt
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint: $(PIP_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(PIP_STAMP)
	$(VENV)/bin/mypy

test: install lint typecheck
	$(PY) -m pytest

# Until the local Functions host lands, the demo starts the local Azure (Azurite + emulators) in the foreground.
demo: install
	$(PY) -m devstack up

emulators: install
	$(PY) -m devstack emulators

clean:
	rm -rf $(VENV) node_modules .devstack .pytest_cache .mypy_cache .ruff_cache
