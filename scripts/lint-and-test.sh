#!/usr/bin/env bash
# `make test`'s work: the lint (ruff, ruff format, mypy) runs while the whole suite does, as
# they need nothing of each other; its output is shown when it ends, and the run fails if
# either fails (the suite's exit code 5, no tests collected, is a failure too:
# scripts/run-pytest.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
lint_log=$(mktemp)
trap 'rm -f "$lint_log"' EXIT
make --no-print-directory lint >"$lint_log" 2>&1 &
lint=$!
scripts/run-pytest.sh tests
tests=$?
wait "$lint"
lint_status=$?
echo "--- lint (ruff check, ruff format --check, mypy):"
cat "$lint_log"
if [ "$lint_status" -ne 0 ]; then
    echo "lint failed (exit $lint_status)" >&2
fi
if [ "$tests" -ne 0 ] || [ "$lint_status" -ne 0 ]; then
    exit 1
fi
