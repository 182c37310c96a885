# Set-up and run commands. `make demo` and `make test` work on a fresh machine:
# they create .venv with Python >= 3.12 and install the package first, at the
# versions of constraints.txt (refreshed on purpose by `make lock`).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONSTRAINTS := constraints.txt
# Two pytest workers for the two cores; XLA single-threaded inside each.
PYTEST_ARGS ?= -n 2 --dist loadscope
TESTS := tests numpyro_ebm --doctest-modules

.PHONY: venv demo test test-all test-latest lock lint format docs bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || "$$(sh .ci/find-python)" -m venv $(VENV)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[test,docs,examples]"
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/neural_prior.py

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) -m "not slow" $(TESTS)

test-all: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS) $(TESTS)

# `make test` with the newest releases pyproject.toml allows (in .venv-latest);
# a failure names the releases that differ from constraints.txt
test-latest:
	"$$(sh .ci/find-python)" .ci/releases.py test-latest $(PYTEST_ARGS) -m "not slow" $(TESTS)

# constraints.txt anew from the newest allowed releases; then `make test`
lock:
	"$$(sh .ci/find-python)" .ci/releases.py lock

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

docs: $(STAMP)
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

bench: $(STAMP)
	$(PY) benchmarks/bench_kernels.py
	$(PY) benchmarks/bench_learning.py
	$(PY) benchmarks/bench_mml.py
	$(PY) benchmarks/bench_posteriors.py
	$(PY) benchmarks/bench_diffusion.py
	$(PY) benchmarks/bench_sgmcmc.py
	$(PY) benchmarks/bench_big_data.py

clean:
	rm -rf $(VENV) .venv-latest docs/_build .pytest_cache .ruff_cache
