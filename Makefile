# Each target bootstraps .venv on first use: a new machine needs only Python and the package index.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.pyro_gen-installed
# Real data sets for tests and benchmarks: ../shared/data unless PYRO_GEN_DATA is set.
export PYRO_GEN_DATA ?= $(abspath ../shared/data)

.PHONY: install test demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -n 2  # two workers on two cores, one torch thread each (tests/conftest.py)

demo: $(STAMP)
	$(PY) -m inference.demo --out runs/demo

# Long measurements, not run in CI; each prints a JSON object on its last line.
bench: $(STAMP)
	$(PY) -m pip install -e ".[test,bench]"
	$(PY) benchmarks/vae_speed.py
	$(PY) benchmarks/vae_quality.py --epochs 30
	$(PY) benchmarks/compare_ppca.py --budget 10s --seeds 3
	$(PY) benchmarks/ppca_exact.py
	$(PY) benchmarks/topics_20ng.py --seeds 3
	$(PY) benchmarks/hmm_jsb.py
	$(PY) benchmarks/dmm_iaf_speed.py
	$(PY) benchmarks/flows_speed.py
	$(PY) benchmarks/vae_quality.py --guides diagonal,planar,iaf,sylvester --flow-prior spline --out runs/bench_quality_flows
	$(PY) benchmarks/flows_energy.py --toy --jobs 2
	$(PY) benchmarks/scaling.py --steps 300 --rounds 3

clean:
	rm -rf runs .pytest_cache
