# Two commands for a newcomer:
#   make demo   -- install into .venv and run the demo (simulated regions, fake ARM, SQLite, worker, dashboard)
#   make test   -- install into .venv (with test tools) and run the whole test suite
#   make lint   -- ruff (rules and formatting) and mypy, zero findings (.ci/lint)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/regionguard demo $(ARGS)

# The suite on TEST_WORKERS processes (pytest-xdist; most tests wait on sockets, timers
# and child processes, so more workers than cores pays), a file at a time per worker
# (--dist loadfile: a file's tests run in order, as in a plain run; the longest files
# first, in tests/conftest.py's order, not xdist's by test count); then the tests marked serial, which time themselves
# against the wall clock, alone.
# Exit code 5 (nothing selected, e.g. PYTEST_ARGS=tests/unit) is no failure there.
# Bytecode is cached for the tests even where PYTHONDONTWRITEBYTECODE is set: each
# worker otherwise rewrites and compiles every test module again (collection took
# 7.9 s of CPU per process in a fresh clone instead of 3.7 s).
TEST_WORKERS ?= 4
TEST_ENV := env -u PYTHONDONTWRITEBYTECODE

test: install
	$(TEST_ENV) $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not serial" $(PYTEST_ARGS)
	$(TEST_ENV) $(BIN)/python -m pytest -p no:xdist -m serial $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

lint: install
	BIN=$(BIN) bash .ci/lint

bench: install
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache artifacts
