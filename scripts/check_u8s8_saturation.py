#!/usr/bin/env python3
"""u8 x s8 sums where int16 pair sums overflow: Quench vs ONNX Runtime vs exact.

On x86 CPUs without VNNI (AVX2 only), ONNX Runtime's u8·s8 kernels multiply
with `vpmaddubsw`, which adds two u8·s8 products into a *saturating* int16:
255·127 + 255·127 = 64770 becomes 32767. Quench's AVX2 kernel widens both
sides to int16 and uses `vpmaddwd` (exact int32 pair sums). This builds two
one-node models where every pair overflows (activations 255, weights 127) —
MatMulInteger and a 1x1 QLinearConv — runs both runtimes, and prints each
result next to the exact one. Exits non-zero if Quench is not exact; ORT's
result is only reported (it is exact on VNNI machines).

    ~/.cache/quench/venv/bin/python scripts/check_u8s8_saturation.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parent.parent
K = 64


def model(node, inits, x_type, x_shape, y_type, y_shape):
    g = helper.make_graph([node], "saturation", [helper.make_tensor_value_info("x", x_type, x_shape)],
                          [helper.make_tensor_value_info("y", y_type, y_shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def cases():
    x = np.full((1, K), 255, np.uint8)
    w = np.full((K, 16), 127, np.int8)
    exact = K * 255 * 127
    yield ("MatMulInteger", model(helper.make_node("MatMulInteger", ["x", "w"], ["y"]), [numpy_helper.from_array(w, "w")],
                                  TensorProto.UINT8, [1, K], TensorProto.INT32, [1, 16]), x, exact)
    # 1x1 QLinearConv: y = round(sum * xs * ws / ys); ys makes the exact sum 200.
    xs, ws = 1.0, 1.0
    ys = exact / 200.0
    inits = [numpy_helper.from_array(np.array(v, t), n) for n, v, t in [
        ("xs", xs, np.float32), ("xz", 0, np.uint8), ("ws", ws, np.float32), ("wz", 0, np.int8),
        ("ys", ys, np.float32), ("yz", 0, np.uint8)]]
    inits.append(numpy_helper.from_array(np.full((16, K, 1, 1), 127, np.int8), "w"))
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])
    yield ("QLinearConv", model(node, inits, TensorProto.UINT8, [1, K, 1, 1], TensorProto.UINT8, [1, 16, 1, 1]),
           np.full((1, K, 1, 1), 255, np.uint8), 200)


def main() -> int:
    exe = REPO / "target" / "release" / "quench"
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "quench"], cwd=REPO, check=True)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, m, x, exact in cases():
            path = tmp / f"{name}.onnx"
            onnx.save(m, path)
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            o = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
            np.save(tmp / "x.npy", x)
            subprocess.run([str(exe), "run", str(path), "--input", f"x={tmp / 'x.npy'}", "-o", str(tmp / name)],
                           check=True, capture_output=True)
            q = np.load(tmp / name / "y.npy")
            o0, q0 = int(o.reshape(-1)[0]), int(q.reshape(-1)[0])
            print(f"{name:<14} exact {exact:>8}  Quench {q0:>8}  ONNX Runtime {o0:>8}"
                  f"{'' if o0 == exact else '  (saturated int16 pair sums)'}")
            ok &= bool(np.all(q == exact))
    if not ok:
        print("Quench is not exact", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
