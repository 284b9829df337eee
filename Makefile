# mailmib: `make run` starts the agent, `make test` sets up and runs every check.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DB     ?= var/mailmib.db
LISTEN ?= 127.0.0.1:1161

.PHONY: all run test unit lint venv system-deps bench-deps bench soak clean

all: test

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

# Net-SNMP's client tools (snmpget, snmpwalk, snmptable …) are what the tests poll with;
# Postfix is the real MTA the log-follower tests run (its package neither starts it nor
# writes a main.cf with "No configuration").
system-deps:
	@command -v snmpwalk >/dev/null 2>&1 || { \
	  echo "installing Debian's snmp package (Net-SNMP client tools)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends snmp; }
	@command -v postfix >/dev/null 2>&1 || test -x /usr/sbin/postfix || { \
	  echo "installing Debian's postfix package (for the real-Postfix tests)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "postfix postfix/main_mailer_type select No configuration" \
	    | $$SUDO debconf-set-selections && \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends postfix; }

run: venv
	mkdir -p $(dir $(DB))
	$(BIN)/mailmib-agent --db $(DB) --listen $(LISTEN)

lint: venv
	$(BIN)/ruff check agent counters tests
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q -m 'not netsnmp'

test: venv system-deps bench-deps lint
	$(BIN)/pytest

# The benchmark compares mailmib with Net-SNMP's own agent (snmpd), installed here if missing;
# a short smoke run of it is part of `make test`.
bench-deps:
	@command -v snmpd >/dev/null 2>&1 || test -x /usr/sbin/snmpd || { \
	  echo "installing Debian's snmpd package (Net-SNMP agent)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends snmpd; }

# BENCH_SIZES=10,100 make bench for a subset; results in bench/results/latest.md.
bench: venv system-deps bench-deps
	$(BIN)/python -m bench

# The long robustness run: a million fuzzed datagrams (and a differential run of 20,000),
# twenty rounds of SIGKILLs; about 9 minutes. `make test` runs the same tests at 100,000 / 5.
# MAILMIB_FUZZ_SEED=N varies the corpus (default 1566).
soak: venv system-deps
	MAILMIB_FUZZ=1000000 MAILMIB_CRASH_ROUNDS=20 $(BIN)/pytest -q -rs -s \
	  tests/test_fuzz.py tests/test_crash.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
