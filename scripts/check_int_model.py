#!/usr/bin/env python3
"""Checks an integer-only model written by Quench against ONNX Runtime's own.

Usage: check_int_model.py QUENCH_INT.onnx ORT_QDQ.onnx ORT_QOP.onnx INPUTS.npz OUT.npz

(a) onnx.checker.check_model(full_check=True) passes on QUENCH_INT and ORT loads it;
(b) for every feed in INPUTS.npz (keys s0, s1, ...), ORT's outputs on QUENCH_INT are within
    one quantization step of the output (the scale of the DequantizeLinear producing it) of
    - ORT_QOP, the model quantize_static writes with QuantFormat.QOperator, wherever ORT's
      two formats chose the same quantization parameters (where they did not, e.g. QDQ gives
      AveragePool its input's scale and QOperator its own, the distance is only reported), and
    - ORT's own QDQ → QLinear rewrite of ORT_QDQ (its graph optimizations, saved and checked
      to contain no float op that QUENCH_INT made integer; where it does contain one — ORT does
      not fuse s8-activation groups on x86 without VNNI — only the QOperator comparison counts).
ORT gets the models through ort_exact.for_ort (exact u8·u8 weights where its u8·s8 kernels saturate).
Writes ORT's outputs on QUENCH_INT to OUT.npz (keys "<feed>/<output>") for the Rust test
to compare Quench's runtime with, and prints a JSON summary. Exits 1 when (a) or (b) fails.
"""

import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parent))
from ort_exact import for_ort  # noqa: E402


def output_steps(model):
    """Scale of the DequantizeLinear producing each graph output (None if another op does)."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    steps = {}
    for out in model.graph.output:
        n = producer.get(out.name)
        if n is not None and n.op_type == "DequantizeLinear" and n.input[1] in inits:
            steps[out.name] = float(np.max(inits[n.input[1]]))
        else:
            steps[out.name] = None
    return steps


def session(path, optimized_to=None):
    so = ort.SessionOptions()
    if optimized_to is None:
        # Run the graph as written: no QDQ fusions or other rewrites of ORT's own.
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    else:
        # The extended level holds ORT's QDQ → QLinear rewrite; the layout
        # changes of the level above it would not load in another runtime.
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = optimized_to
    return ort.InferenceSession(for_ort(path), so, providers=["CPUExecutionProvider"])


def params_differ(qdq, qop):
    """Scales/zero points of ORT's QOperator model with no equal value in its QDQ model.

    Compared by value: the two formats name the same tensor differently (a Conv's output
    in one is the removed Relu's in the other)."""
    mine = [numpy_helper.to_array(i) for i in qdq.graph.initializer]
    out = []
    for i in qop.graph.initializer:
        if i.name.endswith(("_scale", "_zero_point")):
            v = numpy_helper.to_array(i)
            if not any(m.dtype == v.dtype and np.array_equal(m, v) for m in mine):
                out.append(i.name)
    return out


def op_counts(model):
    ops = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return ops


def main():
    ours_path, qdq_path, qop_path, inputs_path, out_path = sys.argv[1:6]
    ours = onnx.load(ours_path)
    onnx.checker.check_model(ours, full_check=True)
    fused_path = out_path + ".ort_fused.onnx"
    s_ours = session(ours_path)
    refs = {"ort_qop": session(qop_path), "ort_fused_qdq": session(qdq_path, fused_path)}
    (in_name,) = [i.name for i in s_ours.get_inputs()]
    steps = output_steps(ours)
    feeds = np.load(inputs_path)
    saved, worst = {}, {k: 0.0 for k in refs}
    for key in sorted(feeds.files):
        x = {in_name: feeds[key]}
        a = s_ours.run(None, x)
        for o, va in zip(s_ours.get_outputs(), a):
            saved[f"{key}/{o.name}"] = va
        for ref, s in refs.items():
            for o, va, vb in zip(s_ours.get_outputs(), a, s.run(None, x)):
                step = steps[o.name] or 1e-6 * max(1.0, float(np.max(np.abs(vb))))
                d = float(np.max(np.abs(va.astype(np.float64) - vb))) / step
                worst[ref] = max(worst[ref], d)
    np.savez(out_path, **saved)
    differ = params_differ(onnx.load(qdq_path), onnx.load(qop_path))
    fused_ops = op_counts(onnx.load(fused_path))
    # ORT's rewrite must not leave float any op that Quench made integer.
    float_left = [op for op in ("Conv", "MatMul", "Gemm", "Add", "Mul", "Concat") if op in fused_ops]
    # Where ORT leaves such ops float (it does not fuse s8-activation QDQ groups on x86 CPUs
    # without VNNI), its fused model is no integer reference; the QOperator one still is.
    fused_ok = worst["ort_fused_qdq"] <= 1.0 + 1e-6 or bool(float_left)
    ok = fused_ok and (bool(differ) or worst["ort_qop"] <= 1.0 + 1e-6)
    print(
        json.dumps(
            {
                "checker": "ok",
                "ops": op_counts(ours),
                "max_steps": worst,
                "qop_params_differ": differ,
                "ort_fused_ops": fused_ops,
                "ort_fused_float_left": float_left,
                "ok": ok,
            }
        )
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
