# dialoglab — `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0

.DEFAULT_GOAL := help
.PHONY: help install test test-fast lint format train quickstart eval chat serve web report wandb-sweep-check bench clean clean-all

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

install: ## create .venv, install torch==$(TORCH_VERSION) (CPU) first, then dialoglab[all,dev]
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==$(TORCH_VERSION)
	$(PIP) install --quiet -e ".[all,dev]"
	$(PY) -m dialoglab.accel.extension
	@$(PY) -c "import torch, sys; v = torch.__version__.split('+')[0]; \
	  sys.exit(f'torch was replaced: {torch.__version__}') if v != '$(TORCH_VERSION)' else print('torch', torch.__version__, 'ok')"

test: ## run the test suite (slow tests included; see test-fast)
	$(PY) -m pytest -q

test-fast: ## the test suite without the slow end-to-end tests
	$(PY) -m pytest -q -m "not slow"

lint: ## ruff lint + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: ## ruff autofix + format
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

train: ## train gru_attn on Cornell (downloads the corpus to data/cornell when absent)
	$(PY) train.py model=gru_attn

quickstart: ## train a small chatbot offline on chatterbot-corpus
	$(PY) train.py experiment=quickstart

eval: ## evaluate a checkpoint: make eval CKPT=outputs/train/runs/<run>/checkpoints/last.ckpt
	$(PY) eval.py ckpt_path=$(CKPT)

chat: ## chat in the terminal: make chat CKPT=.../checkpoints/last.ckpt
	$(PY) chat.py ckpt_path=$(CKPT)

serve: ## HTTP API on 127.0.0.1:8000: make serve CKPT=...
	$(PY) serve.py ckpt_path=$(CKPT)

web: ## Streamlit web chat (pick a checkpoint from outputs/)
	$(VENV)/bin/streamlit run app.py

report: ## ranked table + plots of the runs under DIR: make report DIR=outputs/train/sweeps/gru_attn_optuna
	$(PY) -m dialoglab.report $(DIR)

wandb-sweep-check: ## print and compose the commands `wandb agent` would run for the W&B sweep
	$(PY) -m dialoglab.experiment.wandb_sweep conf/wandb_sweep/gru_attn.yaml

bench: ## benchmarks (< 15 min on 2 cores; BENCH="--only data --quick"): outputs/bench/<date>/
	$(PY) -m benchmarks $(BENCH)

clean: ## remove caches and build artefacts (keeps outputs/ and data/)
	rm -rf .pytest_cache .ruff_cache build dist src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

clean-all: clean ## also remove outputs/, data/cache/ and the virtualenv
	rm -rf outputs data/cache $(VENV)
