#!/usr/bin/env bash
# Mutation testing of the core, set-up included: bash scripts/mutants.sh [--jobs 2] [--list] [--id ID ...]
# (see scripts/mutants.py for every option)
MINWAY_EXTRAS="[test]"
. "$(dirname "$0")/env.sh"
python scripts/mutants.py "$@"
