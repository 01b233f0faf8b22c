# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU wheel of torch (a plain `torch` pulls several GB of CUDA packages).
TORCH_PIN ?= torch==2.13.0

.PHONY: setup demo test lint bench pipeline-tiny clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=23"
	$(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -c "import torch, genie_gym; from genie_gym.envs.procgen_prompt import procgen_start_frame as f; f()"
	@touch $(STAMP)

demo: setup
	$(BIN)/genie-gym demo

test: setup
	$(BIN)/ruff check genie_gym agents benchmarks tests
	$(BIN)/python -m pytest tests

lint: setup
	$(BIN)/ruff check genie_gym agents benchmarks tests

pipeline-tiny: setup
	$(BIN)/genie-gym pipeline --preset tiny --out runs/tiny

clean:
	rm -rf $(VENV) runs outputs .pytest_cache
