VENV ?= .venv
PY := $(VENV)/bin/python
CNN_HOST ?= 127.0.0.1
CNN_PORT ?= 8000
CNN_DATA_DIR ?= ./data
export CNN_HOST CNN_PORT CNN_DATA_DIR

.PHONY: install install-test run worker test docker-test bench lint clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

# openapi-python-client goes in without its dependencies (the test extra declares them): its
# metadata asks for typer<0.28, and the `cnn` command needs 0.29 (which the generator runs with).
$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -m pip install --quiet --no-deps openapi-python-client==0.29.1
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	$(PY) -m app.serve

# One RQ worker taking jobs from CNN_REDIS_URL (same CNN_* settings as the servers); run one per
# CPU budget on as many hosts as wanted, all sharing CNN_DATA_DIR and CNN_DATABASE_URL.
worker: install
	$(PY) -m app.training.rq_worker

test: install-test lint
	$(PY) -m pytest

# The Docker tests alone (also part of `make test`); needs root to start the engine.
docker-test: install-test
	.ci/docker-standin.sh
	$(PY) -m pytest -m docker

lint: install-test
	$(VENV)/bin/ruff check cnn_core app cnn_client tests benchmarks scripts
	$(VENV)/bin/ruff format --check cnn_core app cnn_client tests benchmarks scripts
	$(VENV)/bin/hadolint Dockerfile

bench: install-test
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/kernel_variants.py
	$(PY) benchmarks/service_latency.py
	$(PY) benchmarks/reliability_figures.py
	$(PY) benchmarks/memory.py

clean:
	rm -rf $(VENV) .pytest_cache
