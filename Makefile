# Two commands matter: `make demo` and `make test`.  Both install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.winnow-installed
# Where this machine keeps the CPU torch wheel; harmless when absent.
WHEELS := $(wildcard /opt/wheels)
PIP := $(BIN)/pip install --quiet -c constraints.txt $(if $(WHEELS),--find-links $(WHEELS))

.PHONY: install demo test lint bench clean

install: $(STAMP)

# Re-installs only when the packaging inputs change, so a second `make install` is instant.
# chromium: the browser tests of `winnow report` drive Debian's package (root in CI); without it they fail.
$(STAMP): pyproject.toml constraints.txt Makefile
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) --upgrade pip >/dev/null
	$(PIP) -e ".[dev,train]"
	touch $(STAMP)

# --fresh: the demo always shows a whole run (a changed pipelines.yaml would otherwise be refused
# as a different configuration in the same run directory)
demo: install
	$(BIN)/winnow run $$($(BIN)/python -c "import yaml;print(next(iter(yaml.safe_load(open('pipelines.yaml'))['pipelines'])))") --fresh

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# From the dev WARC to an aligned model (curation, tokenizer, pretrain, SFT, reward model, DPO) and a
# table; < 1 h on 2 CPU cores.  SPEEDRUN_SCALE=gpu for a GPU; a rerun continues (scripts/speedrun.py).
.PHONY: speedrun
speedrun: install
	scripts/speedrun.sh

clean:
	rm -rf runs .pytest_cache
