#!/usr/bin/env bash
# The main job on bundled data: build Quench, inspect a real third-party model and run it
# on real inputs (a text line, upright and turned by 180°). Needs only Rust.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p quench
Q=target/release/quench
EX=examples/rapidocr-cls
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
$Q inspect $EX/cls.onnx
for f in line line_rotated; do
  echo
  echo "== $f.npy -> probabilities of [0°, 180°]"
  $Q run $EX/cls.onnx --input x=$EX/$f.npy -o "$OUT/$f" --threads 1 --print 2
done
