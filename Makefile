# scorekit: `make demo` runs the main job on the embedded default, `make test` runs the test suite.
# Both first run the idempotent `make setup`.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint airflow clean-store

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	$(BIN)/pytest

# Airflow's scheduler and UI for dags/, on http://127.0.0.1:8080; Ctrl-C stops it (docs/airflow.md).
airflow: setup
	@bash scripts/airflow.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean-store:
	find pmml -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
