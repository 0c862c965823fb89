# The two commands a newcomer needs: `make up` starts the whole stack, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint bench bench-quick bench-publish clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev,local]'
	@touch $(STAMP)

up: $(STAMP)
	$(BIN)/llmpool up

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check llmpool workers beat api tests bench
	$(BIN)/mypy llmpool workers beat api
	$(BIN)/lint-imports

# Every scenario (bench/__main__.py), figures in bench/results/; needs the bench extra (LiteLLM, plots).
bench: $(STAMP)
	@$(BIN)/python -c 'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ("litellm", "matplotlib", "tqdm")))' \
		|| $(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench

# The latest bench/results/ into README.md's Performance table and docs/performance/failover.png.
bench-publish: $(STAMP)
	$(BIN)/python -m bench.publish

# The smoke run: every scenario with tiny sizes (tests/integration/test_bench_quick.py runs it too).
bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick --results bench/results/quick

clean:
	rm -rf $(VENV) .llmpool .pytest_cache
