"""Check models Quench saved: onnx.checker (full_check) must accept each one that ONNX accepts
in its original form, and ONNX Runtime must give the same outputs for original and saved model.
Usage: check_saved_models.py ORIGINAL.onnx SAVED.onnx [INPUTS.npz]   (exit 1 on any difference)"""
import sys, numpy as np, onnx, onnxruntime as ort

orig, saved = sys.argv[1], sys.argv[2]
feeds = dict(np.load(sys.argv[3])) if len(sys.argv) > 3 else None

def check(path):
    try:
        onnx.checker.check_model(path, full_check=True)
        return None
    except Exception as e:  # noqa: BLE001 - report whatever the checker says
        return str(e).splitlines()[0]

orig_err, saved_err = check(orig), check(saved)
if saved_err and not orig_err:
    sys.exit(f"{saved}: onnx.checker rejects the saved model but accepts the original: {saved_err}")
print(f"checker: original {'ok' if not orig_err else 'rejected'}, saved {'ok' if not saved_err else 'rejected'}")

def run(path):
    so = ort.SessionOptions(); so.intra_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    if feeds is None:
        rng = np.random.default_rng(0)
        f = {}
        for i in s.get_inputs():
            shape = [d if isinstance(d, int) else 1 for d in i.shape]
            f[i.name] = rng.standard_normal(shape).astype(np.float32) if "float" in i.type else np.zeros(shape, np.int64)
    else:
        f = feeds
    return s.run(None, f)

for a, b in zip(run(orig), run(saved)):
    if not np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True):
        sys.exit(f"{saved}: ONNX Runtime outputs differ from the original model's")
print("onnxruntime: outputs identical")
