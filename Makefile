# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
comma  := ,
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= cpu,export,serve,dev,demo
# CPU installs pin the local CPU torch build (see constraints-cpu.txt).
CONSTRAINTS ?= constraints-cpu.txt
# Where a CPU-only torch comes from. Empty here: this machine's pip already has the CPU build on disk. From PyPI
# alone, torch==2.13.0 is the CUDA build (~17 nvidia-* packages); elsewhere use
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
DEMO_OUT ?= build/all-MiniLM-L6-v2

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo lint test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-$(subst $(comma),-,$(EXTRAS)): $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

demo: install
	$(BIN)/onnxformer build --out $(DEMO_OUT) --overwrite

# ruff (pyproject's [tool.ruff]) over the repository, mypy (pyproject's [tool.mypy]) over the installed package's
# tree (onnxformer/ with its stage symlinks), then the suite.
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: install
	$(BIN)/python benchmarks/run_suite.py

clean:
	rm -rf $(VENV) build
