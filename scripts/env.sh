# Sourced by the other scripts: make .venv (if missing) and install minway into it.
# A machine with an NVIDIA driver gets torch's default (CUDA) build. Any other machine
# gets the CPU build, pinned so that installs are quick and repeatable: from PyTorch's
# CPU index when it answers (the default index would bring the CUDA build, gigabytes),
# else from the default index.
# PYTHON=python3.12 picks the interpreter the .venv is made with. MINWAY_PYTHON=/path/to/python
# runs the scripts with that interpreter as it is: no .venv, nothing installed (minway's
# dependencies must be there already; the tests run the demo this way).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -n "${MINWAY_PYTHON:-}" ]; then
    python() { "$MINWAY_PYTHON" "$@"; }
    return 0
fi
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
extras=${MINWAY_EXTRAS:-}
stamp=.venv/.minway-installed$extras
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    python -m pip install --quiet --upgrade pip
    if command -v nvidia-smi >/dev/null 2>&1; then
        python -m pip install --quiet "torch>=2.2"
    elif ! python -m pip install --quiet --timeout 10 --retries 0 \
            --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" 2>/dev/null; then
        echo "PyTorch's CPU index did not answer: installing torch from the default index" >&2
        python -m pip install --quiet "torch==2.13.0"
    fi
    python -m pip install --quiet -e ".${extras}"
    touch "$stamp"
fi
