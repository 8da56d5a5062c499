#!/usr/bin/env bash
# Generate the ONNX backend node tests (one folder per case: model.onnx + test_data_set_*/*.pb)
# into $QUENCH_CACHE/onnx-node-tests/<onnx-version>/, using the pinned onnx from setup-python.sh.
# Skipped when already generated. Prints the output dir on the last line.
set -euo pipefail
source "$(dirname "$0")/env.sh"
"$QUENCH_SCRIPTS/setup-python.sh"
VER=$("$QUENCH_PY" -c 'import onnx; print(onnx.__version__)') || die "cannot import onnx from $QUENCH_PY"
OUT=$QUENCH_CACHE/onnx-node-tests/$VER
if [ ! -f "$OUT/.done" ]; then
  echo "generating ONNX node tests into $OUT (about a minute)" >&2
  "$QUENCH_PY" "$QUENCH_SCRIPTS/gen_onnx_node_tests.py" "$OUT" || die "node test generation failed"
  touch "$OUT/.done"
fi
echo "$OUT"
