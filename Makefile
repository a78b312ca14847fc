# The README's two commands: `make serve` and `make test`. Both create .venv when missing
# and reinstall only when pyproject.toml changed, so re-running is fast.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# Quiet pip: no version nag; warnings from the machine's own pip configuration (for example an
# index location in /etc/pip.conf that does not exist) still show, they are yours to fix there.
PIP := $(BIN)/python -m pip --disable-pip-version-check
DATABASE_URL ?= sqlite:///data/livechat.db

.PHONY: serve test lint pytest install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP) install --quiet -e '.[test,bench]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

serve: $(VENV)/.installed
	mkdir -p data
	$(BIN)/livechat serve --host $(HOST) --port $(PORT) --database-url $(DATABASE_URL)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check engine web storage bench widget tests
	$(BIN)/mypy

# Browser tests get their own process (see tests/conftest.py); both runs always happen.
# Chromium missing: installed when we can (root with apt-get), else the browser run fails
# naming the command; LIVECHAT_SKIP_BROWSER=1 skips the browser tests on purpose.
pytest: $(VENV)/.installed-test
	@if [ ! -x /usr/bin/chromium ] && [ "$${LIVECHAT_SKIP_BROWSER:-}" != 1 ] \
	    && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "make: installing Chromium for the browser tests (apt-get install -y chromium)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium >/dev/null \
	        || echo "make: could not install Chromium; the browser tests will fail"; \
	fi
	status=0; \
	$(BIN)/python -m pytest --ignore=tests/browser $(PYTEST_ARGS) || status=$$?; \
	$(BIN)/python -m pytest tests/browser $(PYTEST_ARGS) || status=$$?; \
	exit $$status

test: lint pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
