# Two commands on a fresh machine: `make run` (set up, then train the default config) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run lint format test test-fast benchmark fortunes lm-demo lm-demo-learned lm-demo-from-preset lm-demo-lora lm-demo-grpo clean

$(STAMP): requirements.txt requirements-dev.txt requirements-nodeps.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==25.3
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt -c constraints.txt
	# TF-Agents' own metadata pins conflict with this stack: installed without its dependencies (BUILD.md).
	$(BIN)/pip install --quiet --no-deps -r requirements-nodeps.txt
	# This project itself, editable: `python -m pipeline` and `ppo-pipeline` from any folder (the venv's setuptools).
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/python -m pipeline run configs/cartpole.yaml

# Lint and format check (ruff, configured in pyproject.toml), then the whole suite: what CI runs.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

benchmark: setup
	$(BIN)/python benchmarks/cartpole_solve.py
	$(BIN)/python benchmarks/lm_throughput.py --size tiny --batch 16
	$(BIN)/python benchmarks/lm_throughput.py --size small --batch 16

# The LM demos' corpus is Debian's fortunes; installed here when apt is there and it is missing.
fortunes:
	@test -d /usr/share/games/fortunes || ! command -v apt-get >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq fortunes) || \
		echo "could not install fortunes: set data.corpus in configs/lm_sentiment.yaml to your own text"

lm-demo: setup fortunes
	$(BIN)/python -m pipeline run configs/lm_sentiment.yaml --run-dir runs/lm

# The same demo with a learned reward model as PPO's reward and VADER as the gold one.
lm-demo-learned: setup fortunes
	$(BIN)/python -m pipeline run configs/lm_sentiment_learned_reward.yaml --run-dir runs/lm_learned

# PPO starting from the SFT model lm-demo wrote as a keras-hub preset (runs/lm/preset); runs lm-demo first if needed.
lm-demo-from-preset: setup fortunes
	test -f runs/lm/preset/config.json || $(BIN)/python -m pipeline run configs/lm_sentiment.yaml --run-dir runs/lm
	$(BIN)/python -m pipeline run configs/lm_sentiment_from_preset.yaml --run-dir runs/lm_from_preset

# The same PPO with LoRA adapters (configs/lm_sentiment_lora.yaml).
lm-demo-lora: setup fortunes
	test -f runs/lm/preset/config.json || $(BIN)/python -m pipeline run configs/lm_sentiment.yaml --run-dir runs/lm
	$(BIN)/python -m pipeline run configs/lm_sentiment_lora.yaml --run-dir runs/lm_lora

# GRPO with a verifiable reward on generated additions (configs/lm_arithmetic_grpo.yaml); about a minute.
lm-demo-grpo: setup
	$(BIN)/python -m pipeline.lm.arithmetic runs/arithmetic_data
	$(BIN)/python -m pipeline run configs/lm_arithmetic_grpo.yaml --run-dir runs/lm_grpo

clean:
	rm -rf $(VENV) runs
