#!/usr/bin/env python3
"""Builds small float models and quantizes each with ONNX Runtime's quantize_static.

For every model NAME this writes, into OUT (default $QUENCH_CACHE/int-format):
  NAME.float.onnx   the float model (onnx.helper, random weights, fixed seed)
  NAME.qdq.onnx     ORT quantize_static, QuantFormat.QDQ
  NAME.qop.onnx     ORT quantize_static, QuantFormat.QOperator (the integer-only reference)
  NAME.inputs.npz   test inputs (keys "s0", "s1", ...: one feed of the single input each)
Both formats use the same calibration reader (MinMax, per-channel weights). The
`int_format_ort` test in crates/quench-quant converts NAME.qdq.onnx with Quench's `to_int`
and compares it with NAME.qop.onnx through `scripts/check_int_model.py`.

Usage: make_ort_quantized.py [OUT]
"""

import os
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

OPSET = 13
CALIB_SAMPLES = 16
TEST_SAMPLES = 4


class Builder:
    """Collects nodes and random initializers with readable names."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0

    def w(self, name, shape, scale=None):
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        scale = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
        a = (self.rng.standard_normal(shape) * scale).astype(np.float32)
        self.inits.append(numpy_helper.from_array(a, name))
        return name

    def const(self, name, array):
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type, inputs, **attrs):
        self.n += 1
        out = f"{op_type.lower()}{self.n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{op_type}_{self.n}", **attrs))
        return out

    def conv(self, x, cin, cout, k, relu=True, **attrs):
        i = self.n + 1
        y = self.op(
            "Conv",
            [x, self.w(f"conv{i}.w", [cout, cin, k, k]), self.w(f"conv{i}.b", [cout], 0.1)],
            kernel_shape=[k, k],
            pads=[k // 2] * 4,
            **attrs,
        )
        return self.op("Relu", [y]) if relu else y

    def model(self, name, inputs, output, out_shape):
        graph = helper.make_graph(
            self.nodes,
            name,
            inputs,
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)],
            self.inits,
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        m.ir_version = 8
        onnx.checker.check_model(m, full_check=True)
        return m


def cnn(seed):
    """Conv+Relu, MaxPool, residual Add, Concat, GlobalAveragePool, Flatten, Gemm head."""
    b = Builder(seed)
    x = "x"
    c1 = b.conv(x, 3, 8, 3)
    p = b.op("MaxPool", [c1], kernel_shape=[2, 2], strides=[2, 2])
    c2 = b.conv(p, 8, 8, 3)
    r = b.op("Add", [c2, p])
    a = b.conv(r, 8, 4, 1)
    c = b.conv(r, 8, 4, 3, relu=False)
    cat = b.op("Concat", [a, c], axis=1)
    g = b.op("GlobalAveragePool", [cat])
    f = b.op("Flatten", [g], axis=1)
    y = b.op("Gemm", [f, b.w("fc.w", [10, 8]), b.w("fc.b", [10], 0.1)], transB=1)
    xi = helper.make_tensor_value_info(x, TensorProto.FLOAT, [2, 3, 12, 12])
    return b.model("cnn", [xi], y, [2, 10]), {x: [2, 3, 12, 12]}


def mlp(seed):
    """MatMul + bias Add + Relu, MatMul, Mul by a constant, Gemm without transB."""
    b = Builder(seed)
    x = "x"
    h = b.op("MatMul", [x, b.w("w1", [16, 32])])
    h = b.op("Add", [h, b.w("b1", [32], 0.1)])
    h = b.op("Relu", [h])
    h = b.op("MatMul", [h, b.w("w2", [32, 24])])
    h = b.op("Mul", [h, b.const("gain", np.full([24], 0.5, np.float32))])
    y = b.op("Gemm", [h, b.w("w3", [24, 10]), b.w("b3", [10], 0.1)])
    xi = helper.make_tensor_value_info(x, TensorProto.FLOAT, [4, 16])
    return b.model("mlp", [xi], y, [4, 10]), {x: [4, 16]}


def misc(seed):
    """LeakyRelu, AveragePool, Sigmoid gate (Mul), Transpose, Reshape, Squeeze/Unsqueeze, MatMul."""
    b = Builder(seed)
    x = "x"
    c = b.conv(x, 4, 8, 3, relu=False)
    lr = b.op("LeakyRelu", [c], alpha=0.1)
    ap = b.op("AveragePool", [lr], kernel_shape=[2, 2], strides=[2, 2])
    s = b.op("Sigmoid", [ap])
    m = b.op("Mul", [ap, s])
    t = b.op("Transpose", [m], perm=[0, 2, 3, 1])
    u = b.op("Unsqueeze", [t, b.const("ax0", np.array([1], np.int64))])
    q = b.op("Squeeze", [u, b.const("ax1", np.array([1], np.int64))])
    r = b.op("Reshape", [q, b.const("shape", np.array([2, 128], np.int64))])
    y = b.op("MatMul", [r, b.w("head", [128, 6])])
    xi = helper.make_tensor_value_info(x, TensorProto.FLOAT, [2, 4, 8, 8])
    return b.model("misc", [xi], y, [2, 6]), {x: [2, 4, 8, 8]}


class Reader(CalibrationDataReader):
    def __init__(self, feeds):
        self.feeds, self.i = feeds, 0

    def get_next(self):
        if self.i >= len(self.feeds):
            return None
        self.i += 1
        return self.feeds[self.i - 1]

    def rewind(self):
        self.i = 0


def feeds(shapes, n, seed):
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()} for _ in range(n)]


# (name, builder, activation type)
CASES = [
    ("cnn", cnn, QuantType.QUInt8),
    ("cnn_s8", cnn, QuantType.QInt8),
    ("mlp", mlp, QuantType.QUInt8),
    ("misc", misc, QuantType.QUInt8),
]


def main():
    default = Path(os.environ.get("QUENCH_CACHE", Path.home() / ".cache/quench")) / "int-format"
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    out.mkdir(parents=True, exist_ok=True)
    for i, (name, build, act) in enumerate(CASES):
        model, shapes = build(100 + i)
        fpath = out / f"{name}.float.onnx"
        onnx.save(model, fpath)
        calib = feeds(shapes, CALIB_SAMPLES, 200 + i)
        for fmt, suffix in [(QuantFormat.QDQ, "qdq"), (QuantFormat.QOperator, "qop")]:
            quantize_static(
                str(fpath),
                str(out / f"{name}.{suffix}.onnx"),
                Reader(calib),
                quant_format=fmt,
                per_channel=True,
                activation_type=act,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        (name_in,) = shapes
        tests = feeds(shapes, TEST_SAMPLES, 300 + i)
        np.savez(out / f"{name}.inputs.npz", **{f"s{j}": t[name_in] for j, t in enumerate(tests)})
    (out / "DONE").write_text("\n".join(c[0] for c in CASES) + "\n")
    print(out)


if __name__ == "__main__":
    main()
