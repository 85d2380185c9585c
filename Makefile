# The two commands a newcomer runs: `make demo` and `make test`. Both install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEBS := xvfb x11-apps x11-utils xauth xdotool xterm zenity socat iproute2 openssh-server openssh-client xtrace etcd-server etcd-client featherpad qterminal

.PHONY: install debs test check demo bench lint clean

install: debs $(STAMP)

debs:
	@sh scripts/ensure-debs $(DEBS)

$(STAMP): pyproject.toml setup.py xproxy/_speedups.c
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# The pure-core unit tests alone (no process, no socket; tests/conftest.py marks them) and ruff.
check: install
	$(VENV)/bin/ruff check xproxy discovery replicaclient testing
	$(PY) -m pytest -q -m unit $(PYTEST_ARGS)

demo: install
	$(PY) -m demos.demo

bench: install
	@set -e; for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b; done

lint: install
	$(VENV)/bin/ruff check xproxy discovery replicaclient testing
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache
