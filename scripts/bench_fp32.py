#!/usr/bin/env python3
"""fp32 latency of Quench vs ONNX Runtime on ResNet-50 and MobileNetV2.

Builds both networks as ONNX files (224x224, batch 1, random weights,
opset 17, export-like: Conv with bias, BatchNorm folded), times ONNX Runtime
on one thread, then times Quench through the `bench_fp32` example of
quench-runtime, checks both produce the same output, and prints the medians
and their ratio.

    ~/.cache/quench/venv/bin/python scripts/bench_fp32.py [--runs 30] [--models resnet50,mobilenetv2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parent.parent


class Builder:
    """Accumulates nodes and random initializers of an export-like graph."""

    def __init__(self, seed: int = 0):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self.n = 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}_{self.n}"

    def const(self, arr: np.ndarray, prefix: str = "c") -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def conv(self, x, cin, cout, k, stride=1, group=1, act="relu"):
        fan_in = cin // group * k * k
        w = self.rng.normal(0, (2.0 / fan_in) ** 0.5, (cout, cin // group, k, k)).astype(np.float32)
        b = self.rng.normal(0, 0.01, cout).astype(np.float32)
        y = self.name("conv")
        p = k // 2
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, self.const(w, "w"), self.const(b, "b")],
                [y],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[p, p, p, p],
                group=group,
            )
        )
        if act == "relu":
            return self.op("Relu", [y])
        if act == "relu6":
            lo = self.const(np.array(0.0, np.float32), "min")
            hi = self.const(np.array(6.0, np.float32), "max")
            return self.op("Clip", [y, lo, hi])
        return y

    def op(self, op_type, inputs, **attrs):
        y = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [y], **attrs))
        return y

    def head(self, x, cin, classes=1000):
        x = self.op("GlobalAveragePool", [x])
        x = self.op("Flatten", [x], axis=1)
        w = self.rng.normal(0, 0.01, (classes, cin)).astype(np.float32)
        b = np.zeros(classes, np.float32)
        return self.op("Gemm", [x, self.const(w, "fc_w"), self.const(b, "fc_b")], transB=1)

    def model(self, out: str, name: str) -> onnx.ModelProto:
        g = helper.make_graph(
            self.nodes,
            name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 1000])],
            self.inits,
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def resnet50() -> onnx.ModelProto:
    b = Builder(1)
    x = b.conv("input", 3, 64, 7, 2)
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for width, blocks, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
        for i in range(blocks):
            s = stride if i == 0 else 1
            out = width * 4
            y = b.conv(x, cin, width, 1)
            y = b.conv(y, width, width, 3, s)
            y = b.conv(y, width, out, 1, act=None)
            short = b.conv(x, cin, out, 1, s, act=None) if i == 0 else x
            x = b.op("Relu", [b.op("Add", [y, short])])
            cin = out
    return b.model(b.head(x, cin), "resnet50")


def mobilenetv2() -> onnx.ModelProto:
    b = Builder(2)
    x = b.conv("input", 3, 32, 3, 2, act="relu6")
    cin = 32
    for t, c, n, s in [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            y = x if t == 1 else b.conv(x, cin, hidden, 1, act="relu6")
            y = b.conv(y, hidden, hidden, 3, stride, group=hidden, act="relu6")
            y = b.conv(y, hidden, c, 1, act=None)
            x = b.op("Add", [x, y]) if stride == 1 and cin == c else y
            cin = c
    x = b.conv(x, cin, 1280, 1, act="relu6")
    return b.model(b.head(x, 1280), "mobilenetv2")


def ort_session(path: Path, level: str, profile: bool = False):
    """A 1-thread, sequential ORT session; profiles go next to the model."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    so.enable_profiling = profile
    so.profile_file_prefix = str(path.parent / "ort_profile")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_profile(path: Path, x: np.ndarray, level: str, runs: int = 5) -> None:
    """Prints ORT's median time per op type (from its own profiler)."""
    import json

    sess = ort_session(path, level, profile=True)
    for _ in range(runs + 2):
        sess.run(None, {"input": x})
    events = json.load(open(sess.end_profiling()))
    per: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            per[op] = per.get(op, 0.0) + e["dur"] / 1e3 / (runs + 2)
    for op, ms in sorted(per.items()):
        print(f"    ORT {op:<20} {ms:8.3f} ms (mean)")


def quench_times(exe: Path, path: Path, xin: Path, yout: Path, runs: int, profile: bool):
    cmd = [str(exe), str(path), str(xin), str(yout), str(runs)] + (["--profile"] if profile else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    times, cpu = [], []
    for line in out.splitlines():
        if line.startswith("times_ms"):
            times = [float(v) for v in line.split()[1:]]
        elif line.startswith("cpu_times_ms"):
            cpu = [float(v) for v in line.split()[1:]]
        elif profile and not line.startswith("median_ms"):
            print("    Quench " + line)
    return times, cpu


def bench(path: Path, x: np.ndarray, exe: Path, args):
    """Alternates rounds of ORT and Quench runs so both see the same machine load.

    Returns wall and CPU times (ms) of both, and the max relative output error.
    """
    xin, yout = args.dir / "input.f32", args.dir / "output.f32"
    x.tofile(xin)
    sess = ort_session(path, args.ort_level)
    feed = {"input": x}
    for _ in range(3):
        y_ort = sess.run(None, feed)[0]
    per_round = max(1, args.runs // args.rounds)
    ort_t: list[float] = []
    ort_c: list[float] = []
    q_t: list[float] = []
    q_c: list[float] = []
    for r in range(args.rounds):
        for _ in range(per_round):
            t0, c0 = time.perf_counter(), time.process_time()
            sess.run(None, feed)
            ort_t.append((time.perf_counter() - t0) * 1e3)
            ort_c.append((time.process_time() - c0) * 1e3)
        wall, cpu = quench_times(exe, path, xin, yout, per_round, args.profile and r == 0)
        q_t += wall
        q_c += cpu
    y_q = np.fromfile(yout, dtype=np.float32)
    err = float(np.max(np.abs(y_ort.ravel() - y_q)) / (np.max(np.abs(y_ort)) + 1e-12))
    if args.profile:
        ort_profile(path, x, args.ort_level)
    return ort_t, q_t, ort_c, q_c, err


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5, help="alternating ORT/Quench rounds")
    ap.add_argument("--models", default="resnet50,mobilenetv2")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/quench-bench"))
    ap.add_argument("--ort-level", default="ORT_ENABLE_ALL", help="ORT graph optimization level")
    ap.add_argument("--profile", action="store_true", help="print Quench time per op type")
    ap.add_argument("--exe", type=Path, help="prebuilt bench_fp32 example (default: cargo build it)")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)

    exe = args.exe
    if exe is None:
        subprocess.run(
            ["cargo", "build", "--release", "-q", "-p", "quench-runtime", "--example", "bench_fp32"],
            cwd=REPO,
            check=True,
        )
        exe = REPO / "target" / "release" / "examples" / "bench_fp32"

    builders = {"resnet50": resnet50, "mobilenetv2": mobilenetv2}
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    rows = []
    for name in args.models.split(","):
        path = args.dir / f"{name}.onnx"
        if not path.exists():
            onnx.save(builders[name](), path)
        ort_t, q_t, ort_c, q_c, err = bench(path, x, exe, args)
        med = statistics.median
        rows.append((name, med(ort_t), med(q_t), med(ort_c), med(q_c), err))
        print(f"{name}: wall ORT {med(ort_t):.2f} / Quench {med(q_t):.2f} ms; "
              f"CPU ORT {med(ort_c):.2f} / Quench {med(q_c):.2f} ms")

    print(f"\n1 thread, batch 1, 224x224, medians of {len(ort_t)} runs each in {args.rounds} alternating "
          f"rounds, ORT level {args.ort_level}; load average {os.getloadavg()[0]:.1f}")
    print("CPU time = process CPU time per run: robust when other processes share the cores.")
    print(f"{'model':<12} {'ORT wall':>9} {'Q wall':>8} {'Q/ORT':>6} | {'ORT cpu':>8} {'Q cpu':>8} {'Q/ORT':>6} | {'rel err':>8}")
    for name, o, q, oc, qc, e in rows:
        print(f"{name:<12} {o:9.2f} {q:8.2f} {q / o:6.3f} | {oc:8.2f} {qc:8.2f} {qc / oc:6.3f} | {e:8.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
