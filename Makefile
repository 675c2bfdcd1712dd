# Both targets bootstrap everything from a bare Python 3.10+ and make: a private uv in .tools/,
# then .venv/ exactly as locks/dev.txt pins it (every file hash-checked), from the index the
# machine's uv is configured with. `make lock` re-resolves both locks (runtime: the image's).
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
LOCK := locks/dev.txt
# Resolved for every platform, hashed, with no index or file URLs in them.
COMPILE = $(UV) pip compile pyproject.toml --universal --generate-hashes --python-version 3.10 \
	--custom-compile-command "make lock" --quiet
DEMO_DIR ?= runs/demo
PYTEST_ARGS ?=

export UV_PYTHON_DOWNLOADS := never
# Prefect must not phone home or share state with other runs on the machine.
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: setup demo test lint lock clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.synced: $(UV) pyproject.toml $(LOCK)
	$(UV) venv --allow-existing --quiet --python $(PYTHON) $(VENV)
	# Bytecode now, once: where PYTHONDONTWRITEBYTECODE is set (as on CI), every Python process
	# (each Ray worker, each test subprocess) would otherwise recompile torch on import.
	$(UV) pip sync --python $(PY) --require-hashes --compile-bytecode $(LOCK)
	# The project itself, editable; its build backend (hatchling) is in the lock.
	$(UV) pip install --python $(PY) --no-deps --no-build-isolation --editable .
	touch $@

setup: $(VENV)/.synced

demo: setup
	$(PY) -m flows.demo --out $(DEMO_DIR)

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check .

lock: $(UV)
	$(COMPILE) --group dev --group build -o locks/dev.txt
	$(COMPILE) --group build -o locks/runtime.txt

clean:
	rm -rf $(TOOLS) $(VENV) runs .pytest_cache
