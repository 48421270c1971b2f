# dialoglab — `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
# eval/chat/serve: a checkpoint's path, or best / last (that checkpoint of the newest run)
CKPT ?= best
# more overrides (or options) for a target's command: make train ARGS="trainer.max_epochs=3"
ARGS ?=
HELP_VARS := PYTHON VENV TORCH_VERSION CKPT ARGS DIR BENCH

.DEFAULT_GOAL := help
.PHONY: help install test test-fast lint format train quickstart eval chat serve web report wandb-sweep-check bench clean clean-all

help: ## list the targets (with the values of their variables) and the variables
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) \
	  | sed $(foreach v,$(HELP_VARS),$(if $($(v)),-e 's|$$($(v))|$($(v))|g')) \
	  | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-17s\033[0m %s\n", $$1, $$2}'
	@printf '\nvariables (make TARGET NAME=value):\n'
	@$(foreach v,$(HELP_VARS),printf '  %-17s %s\n' '$(v)' '$(if $($(v)),$($(v)),(unset))';)

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

train: ## train gru_attn on Cornell (downloads it to data/cornell when absent): train.py model=gru_attn $(ARGS)
	$(PY) train.py model=gru_attn $(ARGS)

quickstart: ## train a small chatbot offline on chatterbot-corpus: train.py experiment=quickstart $(ARGS)
	$(PY) train.py experiment=quickstart $(ARGS)

eval: ## evaluate a checkpoint: eval.py ckpt_path=$(CKPT) $(ARGS)
	$(PY) eval.py ckpt_path=$(CKPT) $(ARGS)

chat: ## chat in the terminal: chat.py ckpt_path=$(CKPT) $(ARGS)
	$(PY) chat.py ckpt_path=$(CKPT) $(ARGS)

serve: ## HTTP API on 127.0.0.1:8000: serve.py ckpt_path=$(CKPT) $(ARGS)
	$(PY) serve.py ckpt_path=$(CKPT) $(ARGS)

web: ## Streamlit web chat on 127.0.0.1:8501 (CKPT= preselects a checkpoint): streamlit run app.py -- $(ARGS)
	$(PY) -c "from dialoglab.extras import exit_unless_installed; exit_unless_installed('web')"
	$(VENV)/bin/streamlit run app.py -- $(if $(filter command line,$(origin CKPT)),ckpt_path=$(CKPT)) $(ARGS)

report: ## ranked table + plots of the runs under DIR: python -m dialoglab.report $(DIR) $(ARGS)
	$(PY) -m dialoglab.report $(DIR) $(ARGS)

wandb-sweep-check: ## print and compose the commands `wandb agent` would run for the W&B sweep
	$(PY) -m dialoglab.experiment.wandb_sweep conf/wandb_sweep/gru_attn.yaml

bench: ## benchmarks (< 15 min on 2 cores; BENCH="--only data --quick"): outputs/bench/<date>/
	$(PY) -m benchmarks $(BENCH) $(ARGS)

clean: ## remove caches and build artefacts (keeps outputs/ and data/)
	rm -rf .pytest_cache .ruff_cache build dist src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

clean-all: clean ## also remove outputs/, data/cache/ and the virtualenv
	rm -rf outputs data/cache $(VENV)
