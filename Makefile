# Each target bootstraps .venv on first use: a new machine needs only Python and the package index.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.pyro_gen-installed
# Real data sets for tests and benchmarks: ../shared/data unless PYRO_GEN_DATA is set.
export PYRO_GEN_DATA ?= $(abspath ../shared/data)

.PHONY: install test demo docs bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[test,docs]"
	sh docs/install_browser.sh  # Debian's chromium for the site's browser test, where this machine allows it
	touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q -n 2 --dist loadgroup  # two workers on two cores, one torch thread each (tests/conftest.py); the docs tests share one

# The documentation site into docs/_build/html, offline; the notebooks run at their normal sizes
# (PYRO_GEN_SMOKE=1 make docs: in smoke mode). Warnings are errors, as in make test.
docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -E -b html -d docs/_build/doctrees docs docs/_build/html
	@echo "open docs/_build/html/index.html"

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
	$(PY) benchmarks/ais_eval.py
	$(PY) benchmarks/discrete_mnist.py
	$(PY) benchmarks/cvae_mnist.py
	$(PY) benchmarks/ssvae_mnist.py --minutes 60
	$(PY) benchmarks/disentangle.py
	$(PY) benchmarks/vqvae_mnist.py

clean:
	rm -rf runs .pytest_cache docs/_build
