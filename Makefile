# Two commands a newcomer needs: `make run` and `make test`. Both set up what they use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint install system-deps loadtest bench bench-emulator bench-peer clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstalls only when a pyproject.toml changes, so a second `make run` starts at once.
$(STAMP): pyproject.toml flask-entra/pyproject.toml entra-emulator/pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e './flask-entra[redis]' -e ./entra-emulator -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests drive for real: Chromium (browser test), redis-server (scale tests)
# and nginx (the production proxy test).
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing="$$missing nginx"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "Missing:$$missing. Install them (e.g. sudo apt-get install$$missing); the tests that need them will fail until then."; \
	  fi; \
	fi

run: install
	$(PY) launch.py

# pytest exits 5 when it collected no test: that is a broken suite, and said so.
test: install system-deps
	@$(PY) -m pytest; rc=$$?; \
	if [ $$rc = 5 ]; then echo "make test: pytest collected no tests (exit 5) - failing"; fi; \
	exit $$rc

lint: install
	$(PY) -m ruff check .

loadtest: install system-deps
	$(PY) bench/loadtest.py

bench: install system-deps
	$(PY) bench/bench_webapp.py
	$(PY) bench/bench_api.py

bench-emulator: install
	$(PY) bench/bench_emulator.py

# The emulator against node oidc-provider (OpenID Certified), installed with npm into bench/peer:
# the emulator with one worker process per core (node's libuv pool signs on every core too).
bench-peer: install
	$(PY) bench/bench_peer.py --emulator-args "--workers $$(nproc)"

clean:
	rm -rf $(VENV) .emulator .flask_session screenshots .pytest_cache
