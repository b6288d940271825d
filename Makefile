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

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	BIN=$(BIN) bash .ci/lint

bench: install
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache artifacts
