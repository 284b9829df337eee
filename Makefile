# mailmib: `make run` starts the agent, `make test` sets up and runs every check.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DB     ?= var/mailmib.db
LISTEN ?= 127.0.0.1:1161

.PHONY: all run test unit lint venv system-deps bench clean

all: test

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

# Net-SNMP's client tools (snmpget, snmpwalk, snmptable …) are what the tests poll with.
system-deps:
	@command -v snmpwalk >/dev/null 2>&1 || { \
	  echo "installing Debian's snmp package (Net-SNMP client tools)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends snmp; }

run: venv
	mkdir -p $(dir $(DB))
	$(BIN)/mailmib-agent --db $(DB) --listen $(LISTEN)

lint: venv
	$(BIN)/ruff check agent counters tests
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q -m 'not netsnmp'

test: venv system-deps lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
