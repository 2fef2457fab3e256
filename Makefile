# scorekit: `make demo` runs the main job on the embedded default, `make test` runs the test suite.
# Both first run the idempotent `make setup`.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint clean-store

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean-store:
	find pmml -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
