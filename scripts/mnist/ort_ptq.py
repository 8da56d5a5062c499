"""onnxruntime static PTQ baselines for the MNIST example models.

Usage (from the repo root, with the project venv: numpy, onnx, onnxruntime 1.31.1):
    ~/.cache/quench/venv/bin/python scripts/mnist/ort_ptq.py examples/mnist/bn_cnn.onnx [MORE.onnx ...]

For each model and each calibration method (MinMax, Entropy, Percentile) and sample count
N in (100, 1000), it runs onnxruntime.quantization.quantize_static in a fresh subprocess on the
first N images of examples/mnist/calib.npz, fed in batches of 10 (10 or 100 calls), with
    quant_format=QDQ, per_channel=True, activation_type=QUInt8, weight_type=QInt8
and otherwise ORT's defaults (asymmetric activations, symmetric weights, reduce_range=False,
Percentile 99.999, Entropy 128 bins, no op/node exclusions). The model is first put through ORT's
recommended pre-processing (quant_pre_process with skip_symbolic_shape=True, which needs sympy:
ONNX shape inference + ORT graph optimisation, which folds BatchNormalization into Conv) unless
--no-preprocess is given; that step is not timed.

The subprocess reports the wall time of the quantize_static call alone (calibration + graph
rewrite, after imports and data loading) and its peak RSS (getrusage ru_maxrss, the whole process:
Python + numpy + onnxruntime are ~the "before" figure, also recorded).

Then float and each int8 model are evaluated with onnxruntime (CPU, batch 100) on the 1,000 images of
examples/mnist/test.npz: top-1 accuracy and agreement of the int8 argmax with the float argmax.
Prints a table and merges the results into examples/mnist/ort_baseline.json (keyed by model stem).
"""

import argparse
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
MNIST = ROOT / "examples" / "mnist"
METHODS = ("MinMax", "Entropy", "Percentile")
COUNTS = (100, 1000)
CALIB_BATCH = 10
EVAL_BATCH = 100


def quantize_one(src, dst, method, n):
    """Child process: quantize_static, then print a JSON line with time and memory."""
    import onnxruntime
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    data = np.load(MNIST / "calib.npz")["input"][:n]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= len(data):
                return None
            batch = data[self.i:self.i + CALIB_BATCH]
            self.i += CALIB_BATCH
            return {"input": batch}

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, method))
    seconds = time.perf_counter() - t0
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"quantize_seconds": round(seconds, 3),
                      "peak_rss_mib": round(rss_after / 1024, 1),
                      "rss_before_quantize_mib": round(rss_before / 1024, 1),
                      "onnxruntime": onnxruntime.__version__}))


def evaluate(path, x, y, ref=None):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pred = np.concatenate([sess.run(None, {"input": x[i:i + EVAL_BATCH]})[0].argmax(1)
                           for i in range(0, len(x), EVAL_BATCH)])
    out = {"top1": float((pred == y).mean())}
    if ref is not None:
        out["agree_with_float"] = float((pred == ref).mean())
    return out, pred


def run_model(model, preprocess, workdir):
    from onnxruntime.quantization import quant_pre_process

    test = np.load(MNIST / "test.npz")
    x, y = test["input"], test["label"]
    src = model
    if preprocess:
        src = workdir / f"{model.stem}.pre.onnx"
        quant_pre_process(str(model), str(src), skip_symbolic_shape=True)
    result = {"model": str(model.relative_to(ROOT)), "preprocess": preprocess}
    result["float"], ref = evaluate(model, x, y)
    if preprocess:
        result["float_preprocessed"], _ = evaluate(src, x, y)
    result["int8"] = {}
    for method in METHODS:
        result["int8"][method] = {}
        for n in COUNTS:
            dst = workdir / f"{model.stem}.{method}.{n}.onnx"
            cmd = [sys.executable, __file__, "--quantize-one", str(src), str(dst), method, str(n)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                  env=dict(os.environ, PYTHONWARNINGS="ignore"))
            stats = json.loads(proc.stdout.strip().splitlines()[-1])
            stats.pop("onnxruntime")
            acc, _ = evaluate(dst, x, y, ref)
            result["int8"][method][str(n)] = {**acc, **stats}
            print(f"  {model.stem:16s} {method:10s} N={n:<5d} top1 {acc['top1']:.4f} "
                  f"agree {acc['agree_with_float']:.4f}  {stats['quantize_seconds']:7.2f}s "
                  f"peak {stats['peak_rss_mib']:.0f} MiB", flush=True)
    return result


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--quantize-one":
        _, _, src, dst, method, n = sys.argv
        quantize_one(src, dst, method, int(n))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=pathlib.Path)
    ap.add_argument("--no-preprocess", action="store_true", help="skip quant_pre_process")
    ap.add_argument("--out", type=pathlib.Path, default=MNIST / "ort_baseline.json")
    args = ap.parse_args()

    import onnxruntime

    out = json.loads(args.out.read_text()) if args.out.exists() else {}
    out["settings"] = {
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
        "command": "python scripts/mnist/ort_ptq.py " + " ".join(sys.argv[1:]),
        "quantize_static": "quant_format=QDQ, per_channel=True, activation_type=QUInt8, "
                           "weight_type=QInt8, calibrate_method=<method>, other options default",
        "preprocess": "none" if args.no_preprocess else "onnxruntime.quantization.quant_pre_process(skip_symbolic_shape=True)",
        "calibration": f"first N images of examples/mnist/calib.npz, batches of {CALIB_BATCH}",
        "evaluation": f"examples/mnist/test.npz, 1000 images, onnxruntime CPU, batch {EVAL_BATCH}",
        "timing": "quantize_static wall time in a fresh subprocess (excludes imports, data loading, "
                  "pre-processing); peak_rss_mib = the subprocess's ru_maxrss; machine: "
                  f"{os.cpu_count()} cores shared with other jobs, single run",
        "load_average_at_start": [round(v, 1) for v in os.getloadavg()],
    }
    out.setdefault("models", {})
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            model = model.resolve()
            key = model.stem + ("" if not args.no_preprocess else "_no_preprocess")
            out["models"][key] = run_model(model, not args.no_preprocess, pathlib.Path(tmp))
    args.out.write_text(json.dumps(out, indent=2) + "\n")

    print(f"\n{'model':24s} {'float':>7s} " + " ".join(f"{m[:6]}@{n:<5d}" for m in METHODS for n in COUNTS))
    for key, r in out["models"].items():
        cells = " ".join(f"{r['int8'][m][str(n)]['top1']:>12.4f}" for m in METHODS for n in COUNTS)
        print(f"{key:24s} {r['float']['top1']:7.4f} {cells}")
    print(args.out)


if __name__ == "__main__":
    main()
