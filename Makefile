# portal: `make run` serves the portal against a throwaway demo directory; `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_DEPS := slapd:slapd slapadd:slapd ldapmodify:ldap-utils
TEST_DEPS := $(RUN_DEPS) redis-server:redis-server nginx:nginx caddy:caddy openssl:openssl wrk:wrk

.PHONY: run test lint format bench soak clean

$(VENV)/.installed: pyproject.toml
	@sh scripts/system-deps.sh python3-venv:python3-venv
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

## run: serve the portal at http://127.0.0.1:5000 against a throwaway demo directory (Ctrl-C stops both)
run: $(VENV)/.installed
	@sh scripts/system-deps.sh $(RUN_DEPS)
	$(PY) -m portal.devserver

## test: the whole suite against real slapd, redis-server and gunicorn
test: $(VENV)/.installed
	@sh scripts/system-deps.sh --soft $(TEST_DEPS)
	$(PY) -m pytest $(PYTEST_ARGS)

## bench: speed targets as ratios against baselines measured in the same run (docs/benchmarks.md)
bench: $(VENV)/.installed
	@sh scripts/system-deps.sh $(RUN_DEPS) redis-server:redis-server nginx:nginx wrk:wrk
	$(PY) -m bench.run

## soak: 60 s of mixed load checking every answer, sockets and memory (docs/soak.md); SOAK_ARGS=--redis
soak: $(VENV)/.installed
	@sh scripts/system-deps.sh $(RUN_DEPS) wrk:wrk $(if $(findstring --redis,$(SOAK_ARGS)),redis-server:redis-server)
	$(PY) -m bench.soak $(SOAK_ARGS)

## lint: formatting and lint checks
lint: $(VENV)/.installed
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

## format: apply formatting and safe lint fixes
format: $(VENV)/.installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
