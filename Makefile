# The two commands the README promises. Both build .venv with pip when it is missing
# (or when pyproject.toml changed), install ddpmlab with its dev extra, then do their job.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ddpmlab-installed

.PHONY: test demo install lint clean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/ddpmlab demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks notebooks

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
