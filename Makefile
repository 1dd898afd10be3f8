# YiLian FHIR Hub. `make run` and `make test` are the two commands a fresh machine needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test check bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/yilian serve

test: $(STAMP)
	$(BIN)/pytest -q

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Benchmarks print their figures; none is a pass/fail test. SEARCH_RESOURCES=1000000 reproduces the 1M figures
# (the load alone takes about 7 minutes); the default keeps `make bench` to a few minutes.
SEARCH_RESOURCES ?= 100000
BENCH_DB ?= /tmp/yilian-search-bench.db
# MATCH_PATIENTS=1000000 reproduces the 1M Patient/$match figures (the load takes about 4 minutes).
MATCH_PATIENTS ?= 100000
MATCH_DB ?= /tmp/yilian-match-bench.db

bench: $(STAMP)
	$(BIN)/python bench/fhir_core_bench.py
	$(BIN)/python bench/validate_bench.py --no-oracles
	$(BIN)/python bench/hl7_ingest.py
	$(BIN)/python bench/dicom_store.py --runs 1
	rm -f $(BENCH_DB)*
	$(BIN)/python bench/search_load.py --db $(BENCH_DB) --resources $(SEARCH_RESOURCES)
	$(BIN)/python bench/search_queries.py --db $(BENCH_DB) --rounds 100
	rm -f $(MATCH_DB)*
	$(BIN)/python bench/match.py --db $(MATCH_DB) --patients $(MATCH_PATIENTS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
