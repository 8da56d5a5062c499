"""Check a quantized model against ONNX Runtime: ORT must load and run it, and Quench's outputs
(OUTDIR/NAME.npy from `quench run`) must equal ORT's within 1 quantization step of each output
(the scale of the DequantizeLinear producing it; float outputs: 1e-4 relative). ORT gets the
model through ort_exact.for_ort (exact u8·u8 weights where its u8·s8 kernels saturate).
Usage: check_quant_vs_ort.py MODEL.onnx INPUTS.npz QUENCH_OUTDIR"""
import sys, os, re, numpy as np, onnx, onnxruntime as ort
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ort_exact import for_ort  # noqa: E402

model_path, inputs_path, outdir = sys.argv[1:4]
m = onnx.load(model_path)
inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
producer = {o: n for n in m.graph.node for o in n.output}
so = ort.SessionOptions(); so.intra_op_num_threads = 1
sess = ort.InferenceSession(for_ort(model_path), so, providers=["CPUExecutionProvider"])
feeds = dict(np.load(inputs_path))
feeds = {i.name: feeds[i.name] for i in sess.get_inputs()}
worst = 0.0
for out, ref in zip(sess.get_outputs(), sess.run(None, feeds)):
    got = np.load(os.path.join(outdir, re.sub(r"[^A-Za-z0-9._-]", "_", out.name) + ".npy"))
    n = producer.get(out.name)
    if n is not None and n.op_type == "DequantizeLinear" and n.input[1] in inits:
        step = float(np.max(inits[n.input[1]]))
    else:
        step = 1e-4 * float(np.max(np.abs(ref))) + 1e-6
    diff = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64)))) / step
    worst = max(worst, diff)
    print(f"{out.name}: max |quench - ort| = {diff:.3f} steps")
if worst > 1.0 + 1e-3:
    sys.exit(f"{model_path}: Quench and ONNX Runtime differ by {worst:.3f} quantization steps (> 1)")
