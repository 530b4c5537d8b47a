#!/usr/bin/env bash
# The test suite, set-up included: bash scripts/test.sh [--quick] [pytest args]
#   --quick      leaves out the tests marked slow or compile (a local loop; CI runs everything)
#   TEST_JOBS=1  one process instead of one per core (pytest-xdist)
MINWAY_EXTRAS="[test]"
. "$(dirname "$0")/env.sh"
if [ "${1:-}" = "--quick" ]; then
    shift
    set -- -m "not slow and not compile" "$@"
fi
python -m pytest -n "${TEST_JOBS:-auto}" "$@"
