"""Compare Quench's quantized ops (ORT com.microsoft contrib ops and the ONNX integer ops) with
ONNX Runtime on tiny random models built with onnx.helper. Prints one pass/FAIL line per case.

Usage: check_contrib_ops.py [--quench PATH/TO/quench] [--keep DIR] [CASE_SUBSTRING...]
Runs each model through `quench run` (default: target/release/quench). Integer outputs must
match exactly, except for ops where ORT's vectorised kernels round differently (QLinearAdd/Mul,
Sigmoid, pooling, requantized Concat): there a difference of 1 is allowed. Exit 1 on any failure."""
import argparse, os, subprocess, sys, tempfile
import numpy as np, onnx, onnxruntime as ort
from onnx import TensorProto as TP, helper as h

MS = "com.microsoft"
rng = np.random.default_rng(0)


def q(dtype, shape):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, size=shape, dtype=np.int64).astype(dtype)


def const(name, arr):
    arr = np.asarray(arr)
    return h.make_tensor(name, h.np_dtype_to_tensor_dtype(arr.dtype), arr.shape, arr.flatten().tolist())


def case(name, op, inputs, consts, attrs=None, domain=MS, tol=0, n_out=1, order=None):
    """inputs: runtime arrays by name; consts: initializers by name; `order` (set by the caller)
    lists the node's inputs by name."""
    return dict(name=name, op=op, inputs=inputs, consts=consts, attrs=attrs or {}, domain=domain,
                tol=tol, n_out=n_out, order=order)


def qparams(prefix, dtype, per=None):
    zp = q(dtype, per) if per else np.array(rng.integers(np.iinfo(dtype).min // 2 + 1, np.iinfo(dtype).max // 2), dtype)
    scale = (rng.random(per).astype(np.float32) * 0.05 + 0.01) if per else np.float32(rng.random() * 0.05 + 0.01)
    return {f"{prefix}_scale": np.asarray(scale, np.float32), f"{prefix}_zero_point": zp}


def build_cases():
    cs = []
    for dt in (np.uint8, np.int8):
        t = dt.__name__
        for op, tol in (("QLinearAdd", 1), ("QLinearMul", 1)):
            for ashape, bshape in (((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (4,)), ((1, 3, 1), (2, 1, 5))):
                c = {**qparams("A", dt), **qparams("B", dt), **qparams("C", dt)}
                cs.append(case(f"{op}_{t}_{ashape}_{bshape}", op,
                               {"A": q(dt, ashape), "B": q(dt, bshape)}, c,
                               order=None, tol=tol) | {"order": ["A", "A_scale", "A_zero_point", "B", "B_scale", "B_zero_point", "C_scale", "C_zero_point"]})
        for op, attrs in (("QLinearSigmoid", {}), ("QLinearLeakyRelu", {"alpha": 0.1})):
            c = {**qparams("X", dt), **qparams("Y", dt)}
            cs.append(case(f"{op}_{t}", op, {"X": q(dt, (3, 17))}, c, attrs, tol=1)
                      | {"order": ["X", "X_scale", "X_zero_point", "Y_scale", "Y_zero_point"]})
        for cl in (0, 1):
            c = {**qparams("x", dt), **qparams("y", dt)}
            shape = (2, 5, 5, 3) if cl else (2, 3, 5, 5)
            cs.append(case(f"QLinearGlobalAveragePool_{t}_cl{cl}", "QLinearGlobalAveragePool", {"X": q(dt, shape)},
                           c, {"channels_last": cl}, tol=1)
                      | {"order": ["X", "x_scale", "x_zero_point", "y_scale", "y_zero_point"]})
        for attrs in ({"kernel_shape": [3, 3]}, {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 0, 0]},
                      {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1},
                      {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}):
            c = {**qparams("x", dt), **qparams("y", dt)}
            cs.append(case(f"QLinearAveragePool_{t}_{sorted(attrs.items())}", "QLinearAveragePool",
                           {"X": q(dt, (1, 2, 5, 5))}, c, attrs, tol=1)
                      | {"order": ["X", "x_scale", "x_zero_point", "y_scale", "y_zero_point"]})
        c = {**qparams("Y", dt), **qparams("a", dt), **qparams("b", dt)}
        c["b_scale"], c["b_zero_point"] = c["Y_scale"], c["Y_zero_point"]  # one input copied as is
        cs.append(case(f"QLinearConcat_{t}", "QLinearConcat", {"a": q(dt, (2, 3, 4)), "b": q(dt, (2, 2, 4))},
                       c, {"axis": 1}, tol=1)
                  | {"order": ["Y_scale", "Y_zero_point", "a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point"]})
        for per_col in (False, True):
            bq = {"b_scale": np.asarray(rng.random(5) * 0.05 + 0.01 if per_col else 0.02, np.float32),
                  "b_zero_point": q(dt, (5,)) if per_col else np.array(3, dt),
                  "B": q(dt, (4, 5)), "bias": rng.standard_normal(5).astype(np.float32)}
            if dt == np.uint8 or per_col:
                cs.append(case(f"DynamicQuantizeMatMul_{t}_percol{per_col}", "DynamicQuantizeMatMul",
                               {"A": rng.standard_normal((2, 3, 4)).astype(np.float32)}, bq, tol=1e-5)
                          | {"order": ["A", "B", "b_scale", "b_zero_point", "bias"]})
            mi = {**bq, "a_scale": np.float32(0.03), "a_zero_point": np.array(2, np.uint8)}
            cs.append(case(f"MatMulIntegerToFloat_u8_{t}_percol{per_col}", "MatMulIntegerToFloat",
                           {"A": q(np.uint8, (3, 4))}, mi, tol=1e-5)
                      | {"order": ["A", "B", "a_scale", "b_scale", "a_zero_point", "b_zero_point", "bias"]})
    # ONNX-domain integer ops ORT runs natively.
    x = q(np.uint8, (1, 4, 6, 6))
    w = q(np.int8, (6, 2, 3, 3))
    c = {"x_scale": np.float32(0.02), "x_zero_point": np.array(120, np.uint8), "w": w,
         "w_scale": (rng.random(6) * 0.02 + 0.005).astype(np.float32), "w_zero_point": np.zeros(6, np.int8),
         "y_scale": np.float32(0.1), "y_zero_point": np.array(100, np.uint8),
         "B": rng.integers(-500, 500, 6).astype(np.int32)}
    cs.append(case("QLinearConv_u8s8_group2_perchannel", "QLinearConv", {"x": x}, c,
                   {"group": 2, "strides": [2, 1], "pads": [1, 0, 1, 1], "dilations": [1, 2]}, domain="")
              | {"order": ["x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point", "y_scale", "y_zero_point", "B"]})
    c = {"a_scale": np.float32(0.02), "a_zero_point": np.array(3, np.int8), "b": q(np.int8, (4, 5)),
         "b_scale": np.float32(0.03), "b_zero_point": np.array(0, np.int8),
         "y_scale": np.float32(0.05), "y_zero_point": np.array(-4, np.int8)}
    cs.append(case("QLinearMatMul_s8_batched", "QLinearMatMul", {"a": q(np.int8, (2, 3, 4))}, c, domain="")
              | {"order": ["a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point", "y_scale", "y_zero_point"]})
    c = {"w": q(np.uint8, (3, 2, 2, 2)), "x_zero_point": np.array(7, np.uint8), "w_zero_point": np.array(9, np.uint8)}
    cs.append(case("ConvInteger_u8", "ConvInteger", {"x": q(np.uint8, (1, 2, 4, 5))}, c,
                   {"pads": [1, 1, 1, 1]}, domain="")
              | {"order": ["x", "w", "x_zero_point", "w_zero_point"]})
    c = {"B": q(np.uint8, (4, 3)), "a_zero_point": np.array(5, np.uint8), "b_zero_point": q(np.uint8, (3,))}
    cs.append(case("MatMulInteger_u8_percol", "MatMulInteger", {"A": q(np.uint8, (2, 2, 4))}, c, domain="")
              | {"order": ["A", "B", "a_zero_point", "b_zero_point"]})
    return cs


def out_type(c):
    """The output element type, by the op's rule (contrib ops have no ONNX schema to infer it)."""
    if c["op"] in ("DynamicQuantizeMatMul", "MatMulIntegerToFloat"):
        return TP.FLOAT
    if c["op"] in ("ConvInteger", "MatMulInteger"):
        return TP.INT32
    both = {**c["consts"], **c["inputs"]}
    for name in ("Y_zero_point", "y_zero_point"):
        if name in c["order"]:
            return h.np_dtype_to_tensor_dtype(both[name].dtype)
    return h.np_dtype_to_tensor_dtype(both[c["order"][0]].dtype)


def make_model(c):
    inputs = [h.make_tensor_value_info(k, h.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in c["inputs"].items()]
    inits = [const(k, v) for k, v in c["consts"].items() if k in c["order"]]
    node = h.make_node(c["op"], c["order"], [f"y{i}" for i in range(c["n_out"])], domain=c["domain"], **c["attrs"])
    outs = [h.make_tensor_value_info(f"y{i}", out_type(c), None) for i in range(c["n_out"])]
    g = h.make_graph([node], c["name"], inputs, outs, inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 13), h.make_opsetid(MS, 1)], ir_version=8)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quench", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "quench"))
    ap.add_argument("--keep", help="keep models, inputs and outputs in this folder")
    ap.add_argument("filters", nargs="*")
    args = ap.parse_args()
    work = args.keep or tempfile.mkdtemp(prefix="quench-contrib-")
    os.makedirs(work, exist_ok=True)
    failed = 0
    for c in build_cases():
        if args.filters and not any(f in c["name"] for f in args.filters):
            continue
        name = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in c["name"])
        model = make_model(c)
        path = os.path.join(work, name + ".onnx")
        onnx.save(model, path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        want = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]).run(None, c["inputs"])
        npz = os.path.join(work, name + ".npz")
        np.savez(npz, **c["inputs"])
        out_dir = os.path.join(work, name + ".out")
        r = subprocess.run([args.quench, "run", path, "--inputs", npz, "-o", out_dir, "--threads", "1"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            failed += 1
            print(f"FAIL {c['name']}: quench run: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
            continue
        why, note = None, ""
        for i, w in enumerate(want):
            got = np.load(os.path.join(out_dir, f"y{i}.npy"))
            if got.shape != w.shape or got.dtype != w.dtype:
                why = f"output {i}: got {got.dtype}{list(got.shape)}, want {w.dtype}{list(w.shape)}"
            elif np.issubdtype(w.dtype, np.integer):
                d = np.abs(got.astype(np.int64) - w.astype(np.int64))
                if d.max(initial=0) > 0:
                    note = f" (max |diff| {d.max()}, {np.count_nonzero(d)} of {d.size} values)"
                if d.max(initial=0) > c["tol"]:
                    why = f"output {i}: max |diff| {d.max()} (> {c['tol']}) at {np.unravel_index(d.argmax(), d.shape)}"
            elif not np.allclose(got, w, rtol=1e-5, atol=c["tol"] or 1e-6):
                why = f"output {i}: max |diff| {np.abs(got - w).max()}"
        failed += why is not None
        print(f"{'pass' if why is None else 'FAIL'} {c['name']}" + (f": {why}" if why else note))
    print(f"{failed} failed" if failed else "all passed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
