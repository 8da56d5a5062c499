#!/usr/bin/env python3
"""Checks Quench QDQ models against ONNX and ONNX Runtime.

For each model directory (as written by the quench-quant pass tests with
QUENCH_QDQ_DIR=DIR, or given explicitly) this runs onnx.checker full_check on
the QDQ model, runs it in ONNX Runtime, and prints ORT's QDQ outputs against
the float model's (SQNR) and against Quench's own QDQ outputs (max difference
in output quantization steps, when they are available).

    scripts/check_qdq_models.py DIR/*/            # directories with qdq.onnx, inputs.npz
    scripts/check_qdq_models.py --qdq q.onnx --inputs in.npz [--float f.onnx] [--quench out.npz]

Exits non-zero if any model fails the checker or does not run in ORT.
"""

import argparse
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort


def run(path, feeds):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def sqnr(ref, test):
    noise = np.sum((ref.astype(np.float64) - test) ** 2)
    return 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(noise, 1e-30))


def output_step(model, name):
    """Scale of the DequantizeLinear producing graph output `name`, if any."""
    inits = {i.name: i for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.output[0] == name and n.input[1] in inits:
            return float(onnx.numpy_helper.to_array(inits[n.input[1]]).max())
    return None


def check(qdq, inputs, float_model=None, quench=None):
    label = qdq.parent.name if qdq.name == "qdq.onnx" else qdq.name
    model = onnx.load(str(qdq))
    onnx.checker.check_model(model, full_check=True)
    ops = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    print(f"{label}: checker full_check OK (opset {opset}; {ops.get('QuantizeLinear', 0)} Q, "
          f"{ops.get('DequantizeLinear', 0)} DQ)")
    feeds = dict(np.load(inputs))
    got = run(qdq, feeds)
    ref = run(float_model, feeds) if float_model and float_model.exists() else {}
    mine = dict(np.load(quench)) if quench and quench.exists() else {}
    for name, y in got.items():
        line = f"  {name} {list(y.shape)}"
        if name in ref:
            line += f": ORT QDQ vs ORT float SQNR {sqnr(ref[name], y):.1f} dB"
        if name in mine:
            d = float(np.max(np.abs(mine[name].astype(np.float64) - y)))
            step = output_step(model, name)
            steps = f" = {d / step:.2f} steps" if step else " (float output)"
            line += f"; Quench vs ORT max |diff| {d:.3g}{steps}"
        print(line)


def compare_extra(directory, inputs, float_model):
    """Float rewrites saved beside the QDQ model (e.g. raised.onnx) vs float.onnx."""
    if not (directory / "float.onnx").exists():
        return
    feeds = dict(np.load(inputs))
    ref = run(float_model, feeds)
    for extra in sorted(directory.glob("*.onnx")):
        if extra.name in ("qdq.onnx", "float.onnx"):
            continue
        onnx.checker.check_model(onnx.load(str(extra)), full_check=True)
        got = run(extra, feeds)
        for name, y in got.items():
            d = float(np.max(np.abs(ref[name] - y)) / max(np.max(np.abs(ref[name])), 1e-12))
            print(f"  {extra.name} vs float.onnx, {name}: max relative difference {d:.2g}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="*", type=pathlib.Path)
    ap.add_argument("--qdq", type=pathlib.Path)
    ap.add_argument("--inputs", type=pathlib.Path)
    ap.add_argument("--float", dest="float_model", type=pathlib.Path)
    ap.add_argument("--quench", type=pathlib.Path, help="Quench's outputs for the QDQ model (.npz)")
    a = ap.parse_args()
    jobs = [(d / "qdq.onnx", d / "inputs.npz", d / "float.onnx", d / "quench_qdq_outputs.npz") for d in a.dirs]
    if a.qdq:
        if not a.inputs:
            ap.error("--qdq needs --inputs")
        jobs.append((a.qdq, a.inputs, a.float_model, a.quench))
    if not jobs:
        ap.error("give model directories or --qdq/--inputs")
    failed = 0
    for job in jobs:
        try:
            check(*job)
            if job[0].name == "qdq.onnx":
                compare_extra(job[0].parent, job[1], job[2])
        except Exception as e:  # report every model, then fail
            failed += 1
            print(f"{job[0]}: FAILED: {e}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
