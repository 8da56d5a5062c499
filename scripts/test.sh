#!/usr/bin/env bash
# Runs every Quench test on a fresh machine: installs what the tests need (a Python venv
# with onnx + onnxruntime under $QUENCH_CACHE), fetches the real models, then runs
# formatting and lint checks, the unit/integration/end-to-end tests, and the ONNX
# backend node tests. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

step() { printf '\n== %s\n' "$*"; }

step "python venv (onnx, onnxruntime, numpy)"
scripts/setup-python.sh
step "ONNX backend node tests"
CASES=$(scripts/gen-node-tests.sh | tail -n 1)
step "real models and ONNX Runtime references"
scripts/make-inputs.sh | tail -n 1
step "ONNX's shape inference on the real models (reference for Quench's)"
"$QUENCH_PY" scripts/check_shape_inference.py > /dev/null
step "ONNX Runtime quantize_static models (QDQ + QOperator) for the to_int test"
"$QUENCH_PY" scripts/make_ort_quantized.py > /dev/null

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets --release -- -D warnings

step "cargo test (unit, integration, end-to-end vs ONNX Runtime)"
cargo test --workspace --release

step "ONNX backend node tests through Quench"
cargo run --release -q -p quench-conformance -- "$CASES" --known-failures tests/conformance/known-failures.txt
