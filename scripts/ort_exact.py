"""ONNX Runtime as an exact reference for u8·s8 integer models, on any x86 CPU.

On x86 without VNNI (AVX2 only), ORT's u8·s8 kernels multiply with `vpmaddubsw`, which adds
two u8·s8 products into a saturating int16 (255·127 + 255·127 = 64770 becomes 32767), so its
results are not a reference there (scripts/check_u8s8_saturation.py shows it). Its u8·u8
kernels widen to int16 first and are exact. `for_ort(path)` therefore hands ORT the same
integers with every s8 weight initializer of an integer op (and of a DequantizeLinear, which
ORT's QDQ fusion turns into one) stored as u8 + 128 with its zero point + 128 — `w - zp` is
unchanged — when this CPU lacks VNNI, and the file as it is otherwise (and for s8
activations, which ORT has no u8-weight kernels for).

The checks that compare Quench with ORT (check_quant_vs_ort.py, check_int_model.py,
dynamic/check_ort_run.py, bench_int8.py's agreement) load models through it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

# (s8 weight input, its zero-point input, the scale input whose shape an absent zero point takes)
WEIGHT_INPUTS = {
    "MatMulInteger": [(1, 3, None)],
    "ConvInteger": [(1, 3, None)],
    "DynamicQuantizeMatMul": [(1, 3, 2)],
    "DynamicQuantizeLSTM": [(1, 9, 8), (2, 11, 10)],
    "QLinearConv": [(3, 5, 4)],
    "QLinearMatMul": [(3, 5, 4)],
    "QGemm": [(3, 5, 4)],
    "DequantizeLinear": [(0, 2, 1)],
}


def saturates() -> bool:
    """True on an x86 CPU with AVX2 but no VNNI, where ORT's u8·s8 pair sums saturate."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx2" in flags and "avx512_vnni" not in flags and "avx_vnni" not in flags


def exact_model(m: onnx.ModelProto) -> onnx.ModelProto:
    """`m` with its s8 weight initializers as u8 + 128 (see the module doc)."""
    m = onnx.ModelProto.FromString(m.SerializeToString())
    inits = {t.name: t for t in m.graph.initializer}
    # ORT has no s8-activation × u8-weight kernels: models with s8 activations stay as they are.
    zps = [n.input[2] for n in m.graph.node
           if n.op_type in ("QuantizeLinear", "QLinearConv", "QLinearMatMul", "QGemm") and len(n.input) > 2]
    if any(z in inits and inits[z].data_type == onnx.TensorProto.INT8 for z in zps):
        return m
    done: dict[tuple[str, str], tuple[str, str]] = {}
    for n in m.graph.node:
        for wi, zi, si in WEIGHT_INPUTS.get(n.op_type, []):
            if wi >= len(n.input) or n.input[wi] not in inits:
                continue
            w = numpy_helper.to_array(inits[n.input[wi]])
            if w.dtype != np.int8:
                continue
            zname = n.input[zi] if zi < len(n.input) else ""
            if zname and zname not in inits:
                continue
            if zname:
                z = numpy_helper.to_array(inits[zname])
            else:
                scale = n.input[si] if si is not None and si < len(n.input) else ""
                z = np.zeros(numpy_helper.to_array(inits[scale]).shape if scale in inits else (), np.int8)
            key = (n.input[wi], zname)
            if key not in done:
                wn, zn = f"{n.input[wi]}__u8", f"{n.input[wi]}__u8_zp"
                m.graph.initializer.append(numpy_helper.from_array((w.astype(np.int16) + 128).astype(np.uint8), wn))
                m.graph.initializer.append(numpy_helper.from_array((z.astype(np.int16) + 128).astype(np.uint8), zn))
                done[key] = (wn, zn)
            n.input[wi], zn = done[key]
            while len(n.input) <= zi:
                n.input.append("")
            n.input[zi] = zn
    used = {i for n in m.graph.node for i in n.input}
    replaced = {name for key in done for name in key if name}
    keep = [t for t in m.graph.initializer if t.name in used or t.name not in replaced]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    return m


def for_ort(path) -> str | bytes:
    """What to give onnxruntime.InferenceSession for the model at `path`."""
    if not saturates():
        return str(path)
    return exact_model(onnx.load(str(path))).SerializeToString()
