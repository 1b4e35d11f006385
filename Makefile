# portal: `make run` serves the portal against a throwaway demo directory; `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_DEPS := slapd:slapd slapadd:slapd ldapmodify:ldap-utils
TEST_DEPS := $(RUN_DEPS) redis-server:redis-server nginx:nginx caddy:caddy openssl:openssl wrk:wrk \
	chromium:chromium npm:npm
# axe-core for the browser tests, from the npm registry at the version package-lock.json pins.
AXE := tests/browser/node_modules/axe-core/axe.min.js

.PHONY: run test lint format bench soak screenshots translations clean
BABEL := $(VENV)/bin/pybabel
CATALOGS := portal/translations

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

$(AXE): tests/browser/package.json tests/browser/package-lock.json
	@command -v npm >/dev/null 2>&1 && npm ci --prefix tests/browser --no-audit --no-fund --silent \
		|| echo "npm is missing: the browser tests will skip (fail with CI=true)"

## test: the whole suite against real slapd, redis-server, gunicorn, nginx and Chromium
test: $(VENV)/.installed
	@sh scripts/system-deps.sh --soft $(TEST_DEPS)
	@$(MAKE) --no-print-directory $(AXE)
	$(PY) -m pytest $(PYTEST_ARGS)

## screenshots: the pages the README shows, taken by the browser tests (docs/screenshots/)
screenshots: $(VENV)/.installed $(AXE)
	PORTAL_SCREENSHOTS=1 $(PY) -m pytest -q tests/test_browser.py

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

## translations: collect the texts to translate, merge them into each language, compile them
translations: $(VENV)/.installed
	$(BABEL) extract -F $(CATALOGS)/babel.cfg -k _l -k lazy_gettext --no-location --sort-output \
		--omit-header --no-wrap -o $(CATALOGS)/messages.pot portal
	$(BABEL) update -i $(CATALOGS)/messages.pot -d $(CATALOGS) --no-wrap --ignore-obsolete
	$(BABEL) compile -d $(CATALOGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info tests/browser/node_modules
