# Quickstart targets. Everything lives in .venv/ at the repo root; `make` creates it when missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-tflite compose-check lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,postgres]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rtseg-search demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

# TFLite extra: ~1.1 GB and it downgrades pydantic, so it gets its own venv.
TFL := .venv-tflite
$(TFL)/.installed: pyproject.toml
	test -x $(TFL)/bin/python || $(PY) -m venv $(TFL)
	$(TFL)/bin/pip install -q --upgrade pip
	$(TFL)/bin/pip install -q -e '.[test,tflite]'
	touch $@

test-tflite: $(TFL)/.installed
	$(TFL)/bin/python -m pytest -q -m tflite tests/shared tests/android_harness

# docker-compose.yml validated with compose v1 in a throwaway venv (no Docker engine needed).
CV := .venv-compose
$(CV)/.installed:
	test -x $(CV)/bin/python || $(PY) -m venv $(CV)
	$(CV)/bin/pip install -q "cython<3" wheel setuptools
	$(CV)/bin/pip install -q --no-build-isolation pyyaml==5.4.1
	$(CV)/bin/pip install -q docker-compose
	touch $@

compose-check: $(CV)/.installed
	$(CV)/bin/docker-compose -f docker-compose.yml config -q && echo "docker-compose.yml is valid"

clean:
	rm -rf $(VENV) $(TFL) $(CV) runs var
