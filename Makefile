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

demo: $(STAMP)
	$(VENV)/bin/gxoc check examples/
	$(VENV)/bin/gxoc build examples/hello.yaml -o build/hello.gxp
	$(VENV)/bin/gxo exec build/hello.gxp

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/check_scale.py
	$(PY) bench/loader_bomb.py
	$(PY) bench/kernel.py
	$(PY) bench/expressions.py
	$(PY) bench/state.py
	$(PY) bench/coldstart.py
	$(PY) bench/streams.py
	$(PY) bench/build.py

clean:
	rm -rf $(VENV) build *.egg-info
