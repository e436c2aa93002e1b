# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
comma  := ,
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EXTRAS ?= cpu,export,serve,scale,dev,demo
# CPU installs pin the local CPU torch build (see constraints-cpu.txt).
CONSTRAINTS ?= constraints-cpu.txt
# Where a CPU-only torch comes from. Empty here: this machine's pip already has the CPU build on disk. From PyPI
# alone, torch==2.13.0 is the CUDA build (~17 nvidia-* packages); elsewhere use
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
DEMO_OUT ?= build/all-MiniLM-L6-v2
# A real Triton Inference Server for the tests (tests/test_triton_server.py): its binary and Python backend, unpacked
# from the nvidia-pytriton wheel (never installed: it pins numpy<2).
TRITON_DIR ?= build/tritonserver
export ONNXFORMER_TRITON_DIR ?= $(abspath $(TRITON_DIR))

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install tritonserver demo lint test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-$(subst $(comma),-,$(EXTRAS)): $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

$(TRITON_DIR)/server/bin/tritonserver: tests/fetch_tritonserver.sh | $(BIN)/python
	bash tests/fetch_tritonserver.sh $(TRITON_DIR) $(BIN)/python

tritonserver: $(TRITON_DIR)/server/bin/tritonserver

demo: install
	$(BIN)/onnxformer build --out $(DEMO_OUT) --overwrite

# ruff (pyproject's [tool.ruff]) over the repository, mypy (pyproject's [tool.mypy]) over the installed package's
# tree (onnxformer/ with its stage symlinks), then the suite.
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint tritonserver
	$(BIN)/pytest -q

bench: install
	$(BIN)/python benchmarks/run_suite.py

clean:
	rm -rf $(VENV) build
