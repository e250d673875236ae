# wsfleet: the two commands of the README, and the targets a newcomer would guess.
#   make up     install (runtime) and run the local fleet
#   make test   install (runtime + dev + test tools) and run lint + the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: up test install install-dev test-deps lint unit integration bench proto clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# the Python SDK (wsfleet-client, sdk/python; `wsfleet connect`, the launcher's SDK checks and
# the tests use it) is installed from this tree, never resolved by name from the package
# index: that name is not this project's there (wsfleet's pyproject.toml does not list it)
$(VENV)/.installed-run: pyproject.toml sdk/python/pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ./sdk/python -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml sdk/python/pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ./sdk/python -e '.[dev]'
	touch $@ $(VENV)/.installed-run

install: $(VENV)/.installed-run
install-dev: $(VENV)/.installed-dev

up: install
	$(BIN)/wsfleet up $(ARGS)

test-deps:
	scripts/install-test-deps.sh

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install-dev test-deps
	scripts/lint-and-test.sh

unit: install-dev
	scripts/run-pytest.sh tests/unit

integration: install-dev test-deps
	scripts/run-pytest.sh tests/integration

bench: install-dev
	$(BIN)/python -m benchmarks $(ARGS)

proto: install-dev
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. proto/wsfleet/api/bridge.proto

clean:
	rm -rf $(VENV) .wsfleet .pytest_cache .mypy_cache .ruff_cache *.egg-info
