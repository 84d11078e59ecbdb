# The two entry points of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint sysdeps simdjson bench clean

# The compiled reader (sentinelle/sources/_balp.cpp) is rebuilt whenever it changes.
$(STAMP): pyproject.toml setup.py sentinelle/sources/_balp.cpp
	@$(MAKE) --no-print-directory simdjson
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# simdjson's headers and library for the compiled reader (Debian: libsimdjson-dev). Best
# effort: without it the package still installs and reads through its Python path.
simdjson:
	@if ! test -f /usr/include/simdjson.h; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -q --no-install-recommends libsimdjson-dev >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends libsimdjson-dev >/dev/null 2>&1; } || \
	    echo "note: could not install libsimdjson-dev; the reader will use its Python path"; \
	  else echo "note: libsimdjson-dev is absent (needs apt-get as root); the reader will use its Python path"; fi; \
	fi

demo: $(STAMP)
	$(BIN)/sentinelle demo

lint: $(STAMP)
	$(BIN)/ruff check sentinelle tests bench
	$(BIN)/mypy

# A real syslog relay for the RFC 5425 test: rsyslog with its TLS driver (Debian packages).
# Best effort: without apt or root, that one test is skipped and says why.
sysdeps:
	@if ! command -v rsyslogd >/dev/null 2>&1 && ! test -x /usr/sbin/rsyslogd || ! ls /usr/lib/*/rsyslog/lmnsd_gtls.so >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -q --no-install-recommends rsyslog rsyslog-gnutls >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends rsyslog rsyslog-gnutls >/dev/null 2>&1; } || \
	    echo "note: could not install rsyslog and rsyslog-gnutls; their test will be skipped"; \
	  else echo "note: rsyslog and rsyslog-gnutls are absent (needs apt-get as root); their test will be skipped"; fi; \
	fi

test: $(STAMP) lint sysdeps
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/read.py

clean:
	rm -rf $(VENV) build *.egg-info sentinelle/sources/_balp*.so
