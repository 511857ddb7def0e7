# Quick start: `make demo` and `make test`. Both create .venv and install everything into it.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
JS := converter/runtimes/js
STAMP := $(VENV)/.installed

.PHONY: fuzz install chromium qemu demo test test-fast zoo clean docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml constraints.txt $(JS)/package-lock.json
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,ray,mlflow,tables]'
	npm ci --prefix $(JS) --no-audit --no-fund --loglevel=error
	touch $(STAMP)

install: $(STAMP) chromium

# The browser backends (browser-webgl, -wasm, -cpu, -webgpu) run TF.js in the OS's Chromium. Installed here
# when missing and possible (root with apt-get); otherwise those backends are reported as skipped.
chromium:
	@if [ -n "$$CONVERT_CHROMIUM" ] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Chromium for the browser backends: apt-get install -y chromium"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } \
	  || echo "warning: Chromium could not be installed: the browser backends will be skipped"; \
	else echo "note: no Chromium, and installing it needs root and apt-get: the browser backends will be skipped (install: apt-get install -y chromium)"; fi

# The tests also run int8 ONNX on an emulated CPU without VNNI (qemu-user), where int8 kernels behave differently
# (tests/test_onnx.py). Installed when missing and possible; otherwise that comparison is skipped.
qemu:
	@if command -v qemu-x86_64 >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing qemu-user for the tests: apt-get install -y qemu-user"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user >/dev/null 2>&1 \
	  || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user >/dev/null; } \
	  || echo "warning: qemu-user could not be installed: the test on a CPU without VNNI will be skipped"; \
	else echo "note: no qemu-user: the test on a CPU without VNNI will be skipped (install: apt-get install -y qemu-user)"; fi

demo: install
	$(BIN)/convert run recipes/mobilenet.yaml

# The default suite: everything but the zoo and the deep fuzz runs (their examples are random, 3000 by default:
# a search for new bugs, not a check that can be repeated; `make fuzz` runs them).
test: install qemu
	$(BIN)/python -m pytest -q --durations=25 -m "not fuzz"

fuzz: install
	$(BIN)/python -m pytest -q -m fuzz tests/test_recipe_fuzz.py

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# The model zoo (about an hour on 2 cores): every Keras application family through every format and backend,
# then docs/support-matrix.md from its results (runs/zoo/<family>/cells.json). One family: add ZOO=-kResNet.
zoo: install
	-flock /tmp/convert-heavy.lock $(BIN)/python -m pytest -q -m zoo tests/test_zoo.py $(ZOO)
	$(BIN)/python tests/test_zoo.py --matrix > /dev/null

docs: install
	$(BIN)/convert schema-docs > docs/recipe-reference.md
	$(BIN)/convert cli-docs > docs/cli-reference.md

clean:
	rm -rf runs .pytest_cache
