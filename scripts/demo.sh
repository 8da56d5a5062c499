#!/usr/bin/env bash
# The main job on bundled data: quantize a real trained CNN (ResNet-8 on MNIST, examples/mnist)
# to int8 with 100 real calibration images, then compare float and int8 on 1,000 held-out test
# images: accuracy, agreement, size and latency. Needs only Rust; takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p quench
Q=target/release/quench
EX=examples/mnist
MODEL=${1:-resnet8}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

echo "== quantize $EX/$MODEL.onnx (static PTQ, x86 preset: u8 activations, s8 per-channel weights)"
$Q quantize $EX/$MODEL.onnx -o "$OUT/$MODEL.int8.onnx" --calib $EX/calib.npz --samples 100 --threads 1
echo
echo "== float32 on $EX/test.npz"
$Q eval $EX/$MODEL.onnx --data $EX/test.npz --labels label --batch 1 --threads 1
echo
echo "== int8 (QDQ) on $EX/test.npz"
$Q eval "$OUT/$MODEL.int8.onnx" --data $EX/test.npz --labels label --reference $EX/$MODEL.onnx --batch 1 --threads 1
echo
echo "== size"
ls -l $EX/$MODEL.onnx "$OUT/$MODEL.int8.onnx" | awk '{printf "%10d bytes  %s\n", $5, $NF}'
