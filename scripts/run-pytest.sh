#!/usr/bin/env bash
# Run pytest from the project's venv, on WSFLEET_TEST_WORKERS workers (default 3 on 2 cores: the
# integration tests mostly wait on processes they start, and each worker keeps its own
# ports, tests/conftest.py), whole files to a worker, the 20 slowest tests listed at the end.
# Exit code 5 ("no tests collected") means the suite went missing: a failure, not a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest -q -n "${WSFLEET_TEST_WORKERS:-3}" --dist loadfile --durations=20 "$@"
status=$?
if [ "$status" -eq 5 ]; then
    echo "run-pytest: pytest collected no tests from: $* (exit 5); treating as failure" >&2
    exit 1
fi
exit "$status"
