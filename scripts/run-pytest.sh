#!/usr/bin/env bash
# Run pytest from the project's venv. Exit code 5 ("no tests collected") means
# the suite went missing, which is a failure, not a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest -q "$@"
status=$?
if [ "$status" -eq 5 ]; then
    echo "run-pytest: pytest collected no tests from: $* (exit 5); treating as failure" >&2
    exit 1
fi
exit "$status"
