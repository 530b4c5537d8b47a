#!/usr/bin/env bash
# The test suite, set-up included: bash scripts/test.sh [--quick] [pytest args]
#   --quick      leaves out the tests marked slow or compile (a local loop; CI runs everything)
#   TEST_JOBS=N  pytest-xdist workers (default: one per core); TEST_JOBS=0: pytest alone, in one process
MINWAY_EXTRAS="[test]"
. "$(dirname "$0")/env.sh"
if [ "${1:-}" = "--quick" ]; then
    shift
    set -- -m "not slow and not compile" "$@"
fi
if python -c "import xdist" 2>/dev/null; then
    set -- -n "${TEST_JOBS:-auto}" "$@"
else
    echo "pytest-xdist is not installed: the tests run in one process (pip install pytest-xdist)" >&2
fi
python -m pytest "$@"
