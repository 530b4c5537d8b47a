# Sourced by the other scripts: make .venv (if missing) and install minway into it.
# A machine with an NVIDIA driver gets torch's default (CUDA) build; any other
# machine gets the small CPU build, pinned so that installs are quick and repeatable.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
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
    else
        python -m pip install --quiet "torch==2.13.0"
    fi
    python -m pip install --quiet -e ".${extras}"
    touch "$stamp"
fi
