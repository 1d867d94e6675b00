# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.install-stamp

.PHONY: demo test bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall only when the packaging files change (the install is editable: sources are live).
$(STAMP): $(PY) pyproject.toml setup.py
	$(PY) -m pip install --quiet -e '.[compiler,dev]'
	touch $(STAMP)

# Examples that wait for a feature this release does not run (docs/examples.md says which):
# `gxoc check` refuses them with not-implemented, so `make demo` checks the others.
WAITING_EXAMPLES := e16_manual_approval e22_stdlib_snippets
RUNNABLE_EXAMPLES := $(filter-out $(WAITING_EXAMPLES:%=examples/%.yaml),$(wildcard examples/*.yaml))

demo: $(STAMP)
	$(VENV)/bin/gxoc check $(RUNNABLE_EXAMPLES)
	$(VENV)/bin/gxoc build examples/hello.yaml -o build/hello.gxp
	$(VENV)/bin/gxo exec build/hello.gxp

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/check_scale.py
	$(PY) bench/compiler_large.py
	$(PY) bench/loader_bomb.py
	$(PY) bench/kernel.py
	$(PY) bench/expressions.py
	$(PY) bench/state.py
	$(PY) bench/coldstart.py
	$(PY) bench/sandbox.py
	$(PY) bench/streams.py
	$(PY) bench/build.py

clean:
	rm -rf $(VENV) build *.egg-info
