# Two commands on a fresh machine: `make demo` and `make test`. Both set themselves up.
# Needs only Python 3.11+, Node.js 20 and npm.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP_STAMP  := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
# checkov (infra checks) has a large dependency tree with exact pins of its own: it gets a venv of its own,
# inside .venv so that git, ruff, .funcignore and `make clean` already treat it as .venv.
CHECKOV_VERSION := 3.3.30
CHECKOV_VENV    := $(VENV)/checkov
CHECKOV_STAMP   := $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

.PHONY: install infra-tools lint typecheck infra-check test soak demo up emulators clean

install: $(PIP_STAMP) $(NODE_STAMP)

$(PY):
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)

$(PIP_STAMP): $(PY) requirements.txt requirements-dev.txt
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

$(CHECKOV_STAMP): | $(PY)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check checkov==$(CHECKOV_VERSION)
	touch $@

infra-tools: $(CHECKOV_STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint: $(PIP_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(PIP_STAMP)
	$(VENV)/bin/mypy

# Offline checks of infra/ (no Azure, no Bicep CLI): tree-sitter-bicep parse, checkov, the deployment contracts.
infra-check: $(PIP_STAMP) $(CHECKOV_STAMP)
	CHECKOV=$(CHECKOV_VENV)/bin/checkov $(PY) -m pytest tests/test_infra.py

# One pytest run: the infra checks (tests/test_infra.py) find checkov through $$CHECKOV.
test: install infra-tools lint typecheck
	CHECKOV=$(CHECKOV_VENV)/bin/checkov $(PY) -m pytest

# The crash and storm tests (marked `soak`) again and again: ROUNDS times each (make soak ROUNDS=50). Not in `make test`.
ROUNDS ?= 20
soak: install
	SOAK_ROUNDS=$(ROUNDS) $(PY) -m pytest -m soak

# The main job end to end on the local stack: import, upload, Key Vault reference, run with progress, cancel.
demo: install
	$(PY) -m devstack demo

# The local stack (Azurite, emulators, Functions host) in the foreground until Ctrl-C.
up: install
	$(PY) -m devstack up

emulators: install
	$(PY) -m devstack emulators

clean:
	rm -rf $(VENV) node_modules .devstack .pytest_cache .mypy_cache .ruff_cache
