#!/usr/bin/env python3
"""int8 latency of Quench vs ONNX Runtime on ResNet-50 and MobileNetV2.

Builds the float networks of scripts/bench_fp32.py, quantizes them with ONNX
Runtime's quantize_static (QOperator format: QLinearConv/QLinearAdd/...,
u8 activations, s8 per-channel weights, calibrated on random images), then
times, in alternating rounds on one thread at batch 1: ONNX Runtime on the
int8 file, `quench bench` on the same int8 file, and `quench bench` on the
float file. Prints the medians and the ratios.

    ~/.cache/quench/venv/bin/python scripts/bench_int8.py [--runs 20] [--rounds 3] [--models resnet50,mobilenetv2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fp32 import REPO, mobilenetv2, resnet50  # noqa: E402


def quantize(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(1)
            self.data = iter([{"x": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.data, None)

    name = onnx.load(str(fp32)).graph.input[0].name
    reader = Reader()
    reader.data = iter([{name: d["x"]} for d in reader.data])
    quantize_static(str(fp32), str(out), reader, quant_format=QuantFormat.QOperator,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)


def ort_times(path: Path, runs: int) -> list[float]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    for _ in range(3):
        sess.run(None, {name: x})
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {name: x})
        out.append((time.perf_counter() - t) * 1e3)
    return out


def quench_median(exe: Path, path: Path, runs: int) -> float:
    r = subprocess.run([str(exe), "bench", str(path), "--threads", "1", "--runs", str(runs), "--warmup", "3", "--json"],
                       check=True, capture_output=True, text=True)
    return json.loads(r.stdout)["median_ms"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    ap.add_argument("--models", default="resnet50,mobilenetv2")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/quench-bench"))
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "quench"], cwd=REPO, check=True)
    exe = REPO / "target" / "release" / "quench"
    builders = {"resnet50": resnet50, "mobilenetv2": mobilenetv2}
    rows = []
    for name in args.models.split(","):
        fp32 = args.dir / f"{name}.onnx"
        if not fp32.exists():
            onnx.save(builders[name](), fp32)
        int8 = args.dir / f"{name}.qop.onnx"
        if not int8.exists():
            quantize(fp32, int8)
        o, q, f = [], [], []
        for _ in range(args.rounds):
            o.append(statistics.median(ort_times(int8, args.runs)))
            q.append(quench_median(exe, int8, args.runs))
            f.append(quench_median(exe, fp32, args.runs))
        med = statistics.median
        rows.append((name, med(o), med(q), med(f)))
        print(f"{name}: ORT int8 {med(o):.2f} ms, Quench int8 {med(q):.2f} ms, Quench fp32 {med(f):.2f} ms")
    print(f"\n1 thread, batch 1, 224x224; medians of {args.rounds} alternating rounds of {args.runs} runs; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'model':<12} {'ORT int8':>9} {'Q int8':>8} {'Q fp32':>8} {'Qi8/ORTi8':>10} {'Qi8/Qfp32':>10}")
    for name, o, q, f in rows:
        print(f"{name:<12} {o:9.2f} {q:8.2f} {f:8.2f} {q / o:10.3f} {q / f:10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
