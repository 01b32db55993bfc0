# tilegan front door. `make help` lists the targets. The cache lives in pipeline/, not here:
# make only makes sure the venv exists; `pipeline run` decides what to rebuild.
PY       ?= python3
VENV     ?= .venv
BIN      := $(VENV)/bin
# CPU build that lies on this machine's disk. GPU users: TORCH_SPEC="torch" make install
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install tileset test test-fast bench status clean clean-cache corpus drill

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(BIN)/pipeline: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[test]"
	@touch $@

install: $(BIN)/pipeline ## Create .venv and install tilegan (CPU torch unless TORCH_SPEC says otherwise)

tileset: install ## Run the whole pipeline on examples/ and leave the tileset in out/tileset/
	$(BIN)/pipeline run

status: install ## Show which stages are fresh, stale or missing
	$(BIN)/pipeline status

test: install ## Run the test suite (slow tests included)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: install ## Run the tests except the ones marked slow
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

drill: install ## kill -9 a tiny pipeline run at 33 points over every stage; check every rerun recovers
	$(BIN)/python tests/drill.py $(DRILL_ARGS)

bench: install ## Run the benchmarks (each prints `NAME: ours=.. baseline=.. ratio=..`)
	$(BIN)/pip install --quiet -e ".[bench]"
	@set -e; for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b; done

corpus: install ## Regenerate examples/ from the registry packages it came from (needs pyxel, arcade)
	$(BIN)/pip install --quiet -e ".[corpus]"
	$(BIN)/python examples/regenerate.py

clean-cache: ## Delete the artifact cache (out/cache)
	rm -rf out/cache

clean: ## Delete out/ and the venv
	rm -rf out $(VENV)
