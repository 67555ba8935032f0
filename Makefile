# A new user's two commands: `make repro` runs the whole pipeline, `make test` the test suite.
# Both create the virtualenv (.venv) from pyproject.toml first; it is rebuilt when pyproject.toml changes.

VENV := .venv
BIN := $(VENV)/bin
SYSTEM_DATA := /usr/share/datasets/fashion-mnist

.PHONY: repro test data

repro: $(VENV)/installed data
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: $(VENV)/installed
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest

$(VENV)/installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# Debian's dataset-fashion-mnist is the offline source of the default data set. Where it cannot be installed,
# the download stage still tries data.local_dir and the official mirrors.
data:
	@if [ ! -f $(SYSTEM_DATA)/train-images-idx3-ubyte.gz ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	  else \
	    echo "Fashion-MNIST is not in $(SYSTEM_DATA): run 'sudo apt-get install dataset-fashion-mnist' or set data.local_dir in params.yaml"; \
	  fi; \
	fi
