#!/usr/bin/env bash
# Run pytest from the project's venv, on WSFLEET_TEST_WORKERS workers (default 4 on 2 cores: the
# integration tests mostly wait on processes they start, and each worker keeps its own
# ports, tests/conftest.py), whole files to a worker, the 20 slowest tests listed at the end.
# Files are handed out slowest first (the list below, from --durations; then the other files in
# name order, the quick unit tests last) so no worker starts a long file while the others run
# out of work: a directory argument becomes its test files in that order, and
# --no-loadscope-reorder keeps it (xdist would start the files with the MOST TESTS first and
# leave a slow file of few tests to the end).
# Exit code 5 ("no tests collected") means the suite went missing: a failure, not a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
SLOWEST_FIRST=(
    tests/integration/test_fleet_operations.py
    tests/integration/test_control_plane.py
    tests/integration/test_gateway_behaviour.py
    tests/integration/test_sessions.py
    tests/integration/test_chaos.py
    tests/integration/test_benchmarks_smoke.py
    tests/integration/test_launcher.py
    tests/integration/test_walking_skeleton.py
    tests/integration/test_benchmarks_smoke_faults.py
    tests/integration/test_channels.py
    tests/integration/test_benchmarks_smoke_envoy.py
    tests/integration/test_security.py
    tests/integration/test_routing_features.py
    tests/integration/test_up_survives_faults.py
    tests/integration/test_channel_recovery.py
    tests/integration/test_envoy_drain.py
    tests/integration/test_browser_client.py
    tests/integration/test_l4_tier.py
)
args=()
found=()
for arg in "$@"; do
    if [ -d "$arg" ]; then
        while IFS= read -r file; do found+=("$file"); done < <(
            find "${arg%/}" -name node_modules -prune -o \( -name 'test_*.py' -o -name '*_test.py' \) -print | sort
        )
    else
        args+=("$arg")
    fi
done
ordered=()
for file in "${SLOWEST_FIRST[@]}"; do
    for candidate in "${found[@]}"; do
        [ "$candidate" = "$file" ] && ordered+=("$file") && break
    done
done
for candidate in "${found[@]}"; do
    case " ${SLOWEST_FIRST[*]} " in *" $candidate "*) ;; *) ordered+=("$candidate") ;; esac
done
.venv/bin/python -m pytest -q -n "${WSFLEET_TEST_WORKERS:-4}" --dist loadfile --no-loadscope-reorder \
    --durations=20 "${args[@]}" "${ordered[@]}"
status=$?
if [ "$status" -eq 5 ]; then
    echo "run-pytest: pytest collected no tests from: $* (exit 5); treating as failure" >&2
    exit 1
fi
exit "$status"
