# The two commands of the README: `make search` (the main job) and `make test` (the test suite).
# Each creates the virtual environment first when it is missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
OUT    ?= runs/digits-default

.PHONY: venv search test lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	# torch/torchvision pinned to the releases that install from this machine's local disk
	$(PY) -m pip install "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -e ".[test,ray]"
	touch $@

venv: $(VENV)/.installed

search: venv
	$(VENV)/bin/nas-gym search --out $(OUT)

test: venv
	$(PY) -m pytest -q -n 2

lint: venv
	$(VENV)/bin/ruff check nas_gym agents experiments tests

clean:
	rm -rf $(VENV) runs
