# `make demo` and `make test` work on a fresh machine: they create .venv and install first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench bench-quick clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) examples/seed_examples.py

# The suite turns the NumPy tier off except where it tests it; the array tests run again
# with it on, as users have it.
NUMPY_TIER_TESTS := tests/test_arrays.py tests/test_indexing.py tests/test_inplace.py \
	tests/test_numpy_functions.py tests/test_linalg.py

test: $(VENV)/.installed
	$(PY) -m pytest -q
	JITAD_TEST_NUMPY_TIER=1 $(PY) -m pytest -q $(NUMPY_TIER_TESTS)

bench: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/run.py --call-overhead --new-process --long-graph

bench-quick: $(VENV)/.installed
	$(PY) benchmarks/run.py --quick --long-graph

clean:
	rm -rf $(VENV) .pytest_cache
