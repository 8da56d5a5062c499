#!/usr/bin/env bash
# Write realistic inputs + onnxruntime reference outputs for the real models into $QUENCH_CACHE/inputs/
# (see make_real_inputs.py; extra arguments are passed on, e.g. --image page.png). Prints the dir on the last line.
set -euo pipefail
source "$(dirname "$0")/env.sh"
M=$("$QUENCH_SCRIPTS/fetch-models.sh" | tail -1)
"$QUENCH_PY" "$QUENCH_SCRIPTS/make_real_inputs.py" "$M" --out "$QUENCH_CACHE/inputs" "$@" || die "make_real_inputs.py failed"
