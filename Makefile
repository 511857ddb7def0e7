# Quick start: `make demo` and `make test`. Both create .venv and install everything into it.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
JS := converter/runtimes/js
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast clean docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt $(JS)/package-lock.json
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,ray,mlflow,tables]'
	npm ci --prefix $(JS) --no-audit --no-fund --loglevel=error
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/convert run recipes/mobilenet.yaml

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

docs: install
	$(BIN)/convert schema-docs > docs/recipe-reference.md

clean:
	rm -rf runs .pytest_cache
