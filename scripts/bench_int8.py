#!/usr/bin/env python3
"""int8 latency of Quench vs ONNX Runtime on ResNet-50 and MobileNetV2.

Builds the float networks of scripts/bench_fp32.py, quantizes them with ONNX
Runtime's quantize_static (QOperator format: QLinearConv/QLinearAdd/...; or
QDQ format with --formats qdq, or qdq-rr with ORT's reduce_range; u8
activations, s8 per-channel weights,
calibrated on random images; or, with the format quench-qdq, with
`quench quantize --format qdq` on the same images), then times, in alternating rounds on one
thread at batch 1: ONNX Runtime on the int8 file, `quench bench` on the same
int8 file, and `quench bench` on the float file. Prints the medians of wall
time and of process CPU time per run (steadier on a shared machine), and
the ratios of both.

    ~/.cache/quench/venv/bin/python scripts/bench_int8.py [--runs 20] [--rounds 3] [--models resnet50,mobilenetv2] [--formats qop,qdq,quench-qdq]
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
import onnx.numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fp32 import REPO, mobilenetv2, resnet50  # noqa: E402
from ort_exact import for_ort  # noqa: E402


def quantize(fp32: Path, out: Path, fmt: str) -> None:
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
    quantize_static(str(fp32), str(out), reader, quant_format=QuantFormat.QOperator if fmt == "qop" else QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    reduce_range=fmt == "qdq-rr")


def quench_quantize(exe: Path, fp32: Path, out: Path) -> None:
    """QDQ file written by Quench's own quantizer, calibrated on the images quantize() uses."""
    name = onnx.load(str(fp32), load_external_data=False).graph.input[0].name
    rng = np.random.default_rng(1)
    calib = out.with_suffix(".calib.npz")
    np.savez(calib, **{name: np.concatenate([rng.standard_normal((1, 3, 224, 224)).astype(np.float32) for _ in range(4)])})
    subprocess.run([str(exe), "quantize", str(fp32), "--calib", str(calib), "--format", "qdq", "-o", str(out)],
                   check=True, capture_output=True)


def ort_times(path: Path, runs: int) -> tuple[list[float], list[float]]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    for _ in range(3):
        sess.run(None, {name: x})
    wall, cpu = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        sess.run(None, {name: x})
        wall.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    return wall, cpu


def quench_median(exe: Path, path: Path, runs: int) -> tuple[float, float]:
    """Median wall and process-CPU ms per run of `quench bench`."""
    r = subprocess.run([str(exe), "bench", str(path), "--threads", "1", "--runs", str(runs), "--warmup", "3", "--json"],
                       check=True, capture_output=True, text=True)
    j = json.loads(r.stdout)
    return j["median_ms"], j["cpu_median_ms"]


def agreement(exe: Path, path: Path, workdir: Path) -> float:
    """Largest difference between Quench's and ORT's outputs on one random input, in units of the
    scale of the DequantizeLinear that makes the output (0 = bit-identical integers)."""
    import onnxruntime as ort

    m = onnx.load(str(path))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    out = m.graph.output[0].name
    dq = next(n for n in m.graph.node if out in n.output)
    step = float(inits[dq.input[1]].reshape(-1)[0]) if dq.op_type == "DequantizeLinear" else 1.0
    name = m.graph.input[0].name
    x = np.random.default_rng(7).standard_normal((1, 3, 224, 224)).astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    # Exact ORT (u8·u8 weights) where its u8·s8 kernels saturate (no VNNI): see ort_exact.py.
    want = ort.InferenceSession(for_ort(path), so, providers=["CPUExecutionProvider"]).run(None, {name: x})[0]
    xin, odir = workdir / "agree_x.npy", workdir / "agree_out"
    np.save(xin, x)
    subprocess.run([str(exe), "run", str(path), "--input", f"{name}={xin}", "-o", str(odir), "--threads", "1"],
                   check=True, capture_output=True)
    got = np.load(odir / f"{out}.npy")
    return float(np.max(np.abs(got - want)) / step)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    ap.add_argument("--models", default="resnet50,mobilenetv2")
    ap.add_argument("--formats", default="qop", help="qop (QOperator), qdq (ORT's QDQ), qdq-rr (ORT's QDQ with reduce_range: 7-bit "
                    "weights, whose int16 pair sums cannot saturate on AVX2 without VNNI) and/or quench-qdq (Quench's QDQ), comma separated")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/quench-bench"))
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "quench"], cwd=REPO, check=True)
    exe = REPO / "target" / "release" / "quench"
    builders = {"resnet50": resnet50, "mobilenetv2": mobilenetv2}
    rows = []
    med = statistics.median
    for name in args.models.split(","):
        fp32 = args.dir / f"{name}.onnx"
        if not fp32.exists():
            onnx.save(builders[name](), fp32)
        for fmt in args.formats.split(","):
            int8 = args.dir / f"{name}.{fmt}.onnx"
            if not int8.exists() and fmt == "quench-qdq":
                quench_quantize(exe, fp32, int8)
            elif not int8.exists():
                quantize(fp32, int8, fmt)
            ow, oc, qw, qc, fw, fc = [], [], [], [], [], []
            for _ in range(args.rounds):
                w, c = ort_times(int8, args.runs)
                ow.append(med(w))
                oc.append(med(c))
                w, c = quench_median(exe, int8, args.runs)
                qw.append(w)
                qc.append(c)
                w, c = quench_median(exe, fp32, args.runs)
                fw.append(w)
                fc.append(c)
            steps = agreement(exe, int8, args.dir)
            # Ratios pair by pair within a round (the machine's speed drifts between rounds).
            pair = (med([q / o for q, o in zip(qc, oc)]), med([q / f for q, f in zip(qc, fc)]))
            row = (f"{name}/{fmt}", med(ow), med(qw), med(fw), med(oc), med(qc), med(fc), steps, pair)
            rows.append(row)
            print(f"{row[0]}: wall ORT int8 {row[1]:.2f}, Quench int8 {row[2]:.2f}, Quench fp32 {row[3]:.2f} ms; "
                  f"CPU {row[4]:.2f}, {row[5]:.2f}, {row[6]:.2f} ms; Quench vs ORT output {steps:.2f} steps", flush=True)
    print(f"\n1 thread, batch 1, 224x224; medians of {args.rounds} alternating rounds of {args.runs} runs; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'model':<18} {'':>5} {'ORT int8':>9} {'Q int8':>8} {'Q fp32':>8} {'Qi8/ORTi8':>10} {'Qi8/Qfp32':>10} {'vs ORT':>7}")
    for name, o, q, f, oc_, qc_, fc_, steps, (po, pf) in rows:
        print(f"{name:<18} {'wall':>5} {o:9.2f} {q:8.2f} {f:8.2f} {q / o:10.3f} {q / f:10.3f} {steps:5.2f} steps")
        print(f"{'':<18} {'CPU':>5} {oc_:9.2f} {qc_:8.2f} {fc_:8.2f} {qc_ / oc_:10.3f} {qc_ / fc_:10.3f}")
        print(f"{'':<18} {'pairs':>5} {'':>9} {'':>8} {'':>8} {po:10.3f} {pf:10.3f}  (CPU, median of per-round ratios)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
