# Sourced by the other scripts: cache locations shared by all Quench helper scripts.
# Override QUENCH_CACHE to move everything (venv, node tests, models, inputs) elsewhere.
QUENCH_CACHE=${QUENCH_CACHE:-$HOME/.cache/quench}
QUENCH_VENV=$QUENCH_CACHE/venv
QUENCH_PY=$QUENCH_VENV/bin/python
QUENCH_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export QUENCH_CACHE QUENCH_VENV QUENCH_PY QUENCH_SCRIPTS
die() { echo "error: $*" >&2; exit 1; }
