#!/usr/bin/env bash
# The whole test suite, set-up included: bash scripts/test.sh [pytest args]
MINWAY_EXTRAS="[test]"
. "$(dirname "$0")/env.sh"
python -m pytest -q "$@"
