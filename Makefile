# A new user's two commands: `make repro` runs the whole pipeline, `make test` the test suite.
# Both create the virtualenv (.venv) from pyproject.toml first; it is rebuilt when pyproject.toml changes.

VENV := .venv
BIN := $(VENV)/bin
SYSTEM_DATA := /usr/share/datasets/fashion-mnist
# The stage commands call `python`: put the virtualenv's first on PATH for everything DVC starts.
RUN := PATH="$(CURDIR)/$(BIN):$$PATH"

# `make sweep`: one DVC experiment per combination of these settings, JOBS at a time.
# For example: make sweep SWEEP="-S train.arch=mlp,cnn -S static.observer=minmax,histogram" JOBS=4
SWEEP ?= -S static.observer=minmax,histogram -S quantize.per_channel=false,true -S static.fuse=true,false
JOBS ?= 2
SWEEP_COLUMNS := Experiment|train\.arch|static\.(observer|fuse)$$|quantize\.per_channel|(fp32|static|qat)\.accuracy|static\.vs_fp32\.(size_ratio|speedup)|static\.latency_ms
SWEEP_PLOTS := "Accuracy vs size" "Latency at each batch size"

.PHONY: repro test test-slow data sweep bench bench-224 results

repro: $(VENV)/installed data
	$(RUN) dvc repro

test: $(VENV)/installed
	$(RUN) pytest

# The tests too long for `make test` (QAT of every torchvision family on every backend).
test-slow: $(VENV)/installed
	$(RUN) pytest -m slow

# The fastest FP32 on any runtime against each backend's int8 on each runtime (PyTorch, ONNX Runtime, OpenVINO),
# per architecture and batch size, printed as tables and written to reports/bench.md with the CPU they ran on.
bench: $(VENV)/installed
	$(RUN) python -m pipeline bench --markdown reports/bench.md --docs docs/benchmark.md

# The same at real size: torchvision's models at 224x224 RGB, 1,000 classes, random weights, batch 1.
BENCH_224 := resnet50 mobilenet_v3_large efficientnet_b0 convnext_tiny vit_b_16
bench-224: $(VENV)/installed
	$(RUN) python -m pipeline bench $(foreach arch,$(BENCH_224),--arch $(arch)) --image-size 224 --channels 3 \
	  --classes 1000 --batch 1 --docs docs/benchmark.md

# The results tables of a docs/ page, from experiments: SET names a set of docs/results.yaml (its page and its
# runs). Each run is one `dvc exp run`, one at a time, so their timings do not compete; then the page's tables are
# rewritten from them. `python -m pipeline results $(SET)` rewrites them again without running anything.
SET ?= backends
results: $(VENV)/installed data
	$(RUN) python -m pipeline results $(SET) --run

# Results: reports/sweep.md (the key params and metrics of every experiment) and reports/sweep/index.html
# (the accuracy-vs-size and latency plots of every experiment, overlaid).
sweep: repro
	$(RUN) dvc exp run --queue $(SWEEP)
	$(RUN) dvc exp run --run-all --jobs $(JOBS)
	$(RUN) dvc exp show --md --no-pager --drop '.*' --keep '$(SWEEP_COLUMNS)' > reports/sweep.md
	$(RUN) dvc plots diff $$($(RUN) dvc exp ls --name-only) --targets $(SWEEP_PLOTS) -o reports/sweep
	cat reports/sweep.md

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
