# Two commands do all the set-up on a fresh machine:
#   make run    create .venv, install TierDB, serve on the embedded default (memory policy, ./data, :8080)
#   make test   create .venv, install TierDB + test tools + promtool (into .venv/bin), run the whole suite
#               (incl. real S3); needs root/sudo only if apt has no package lists yet

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: run test install install-dev system-deps bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

system-deps: | $(VENV)/bin/python
	bash scripts/install-system-deps.sh $(VENV)/bin

run: $(VENV)/.installed
	$(VENV)/bin/tierdb serve

test: $(VENV)/.installed-dev system-deps
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

bench: $(VENV)/.installed-dev
	$(PY) benchmarks/bench_memory.py

clean:
	rm -rf $(VENV) .pytest_cache
