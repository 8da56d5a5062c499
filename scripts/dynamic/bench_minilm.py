#!/usr/bin/env python3
"""MiniLM dynamic-int8 speed, side by side: ONNX Runtime fp32 and
quantize_dynamic int8 vs Quench fp32 and `quench quantize --mode dynamic`,
1 thread, sequence 128, batch 1 and 8, wall and process CPU time per run
(CPU time is steadier on a shared machine). Rounds alternate the four runners so
that drift in machine load hits them alike; medians per runner, ratios from
the medians of the same run.

Usage:
  python scripts/dynamic/bench_minilm.py [--quench target/release/quench]
      [--rounds 3] [--runs 20] [--batches 1,8] [--extra-args '--per-token']
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

CACHE = Path(os.environ.get("QUENCH_CACHE", Path.home() / ".cache/quench"))
SEQ = 128


def ort_times(path, batch, runs):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {
        "input_ids": rng.integers(1000, 20000, (batch, SEQ), dtype=np.int64),
        "attention_mask": np.ones((batch, SEQ), np.int64),
        "token_type_ids": np.zeros((batch, SEQ), np.int64),
    }
    for _ in range(3):
        s.run(None, feed)
    ts, cs = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        s.run(None, feed)
        ts.append((time.perf_counter() - t) * 1e3)
        cs.append((time.process_time() - c) * 1e3)
    return statistics.median(ts), statistics.median(cs)


def quench_time(exe, path, batch, runs):
    shapes = [a for n in ("input_ids", "attention_mask", "token_type_ids") for a in ("--shape", f"{n}={batch}x{SEQ}")]
    out = subprocess.run(
        [exe, "bench", str(path), "--threads", "1", "--runs", str(runs), "--json", *shapes],
        check=True,
        capture_output=True,
        text=True,
    )
    j = json.loads(out.stdout)
    return j["median_ms"], j["cpu_median_ms"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quench", default="target/release/quench")
    ap.add_argument("--model", default=str(CACHE / "models/minilm/minilm.onnx"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--extra-args", default="", help="more `quench quantize` flags, e.g. --per-token")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="minilm-bench-"))
    qdyn = work / "quench-dynamic.onnx"
    subprocess.run(
        [args.quench, "quantize", args.model, "-o", str(qdyn), "--mode", "dynamic", *shlex.split(args.extra_args)],
        check=True,
        capture_output=True,
    )
    odyn = work / "ort-dynamic.onnx"
    quantize_dynamic(args.model, str(odyn), weight_type=QuantType.QInt8)
    print(f"load average at start: {os.getloadavg()}")
    for batch in [int(b) for b in args.batches.split(",")]:
        runs = max(3, args.runs // batch)
        t = {k: [] for k in ("ort fp32", "ort dynamic", "quench fp32", "quench dynamic")}
        for _ in range(args.rounds):
            t["ort fp32"].append(ort_times(args.model, batch, runs))
            t["ort dynamic"].append(ort_times(odyn, batch, runs))
            t["quench fp32"].append(quench_time(args.quench, args.model, batch, runs))
            t["quench dynamic"].append(quench_time(args.quench, qdyn, batch, runs))
        for what, i in (("wall", 0), ("process CPU", 1)):
            m = {k: statistics.median(x[i] for x in v) for k, v in t.items()}
            print(f"\nbatch {batch}, seq {SEQ}, 1 thread, {what} time per run, {args.rounds} rounds x {runs} runs (median of round medians, ms):")
            for k, v in m.items():
                print(f"  {k:15s} {v:8.2f}   rounds: {', '.join(f'{x[i]:.2f}' for x in t[k])}")
            print(f"  quench dynamic / ort dynamic = {m['quench dynamic'] / m['ort dynamic']:.2f} (goal <= 0.9)")
            print(f"  quench fp32 / quench dynamic = {m['quench fp32'] / m['quench dynamic']:.2f} (goal >= 2.5)")
            print(f"  ort fp32 / ort dynamic       = {m['ort fp32'] / m['ort dynamic']:.2f}")
            print(f"  quench fp32 / ort fp32       = {m['quench fp32'] / m['ort fp32']:.2f}")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
