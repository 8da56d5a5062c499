"""Dump ONNX's own shape inference on the real models, for comparison with Quench's.

Runs onnx.shape_inference.infer_shapes (strict, with data propagation; falling back to
non-strict when strict mode fails) on every model under MODELS_DIR, after dropping the
value_info the file already carries, and writes the inferred intermediate types to OUT.json:

  {"models": {"rapidocr/x.onnx": {"strict": true, "error": null,
               "values": {"name": {"dtype": "float32", "shape": [1, "batch", null]}}}}}

`shape` is null when the rank is unknown; a null dim is unknown, a string dim is symbolic.
Subgraph (If/Loop body) values are included under their own names.

Where $QUENCH_CACHE/inputs/manifest.tsv names realistic inputs for a model, the model is also run
with onnxruntime with every main-graph node output exposed, and the shapes seen are stored as
"actual": {"name": [dims]} -- ground truth that both inferences must be consistent with.

Usage: python check_shape_inference.py [MODELS_DIR] [OUT.json]
"""
import glob, json, os, sys
import onnx
from onnx import shape_inference

CACHE = os.environ.get("QUENCH_CACHE", os.path.expanduser("~/.cache/quench"))
MODELS = sys.argv[1] if len(sys.argv) > 1 else os.path.join(CACHE, "models")
OUT = sys.argv[2] if len(sys.argv) > 2 else os.path.join(CACHE, "shape-inference", "onnx_shapes.json")

DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
          8: "string", 9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64",
          14: "complex64", 15: "complex128", 16: "bfloat16"}


def subgraphs(g):
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield a.g
            for sg in a.graphs:
                yield sg


def strip(g):
    del g.value_info[:]
    for sg in subgraphs(g):
        strip(sg)


def collect(g, out):
    for vi in g.value_info:
        t = vi.type
        if not t.HasField("tensor_type"):
            continue
        tt = t.tensor_type
        shape = None
        if tt.HasField("shape"):
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                     for d in tt.shape.dim]
        out[vi.name] = {"dtype": DTYPES.get(tt.elem_type, f"onnx-type-{tt.elem_type}"), "shape": shape}
    for sg in subgraphs(g):
        collect(sg, out)


def actual_shapes(path, inputs_npz):
    """Runs the model with onnxruntime, exposing every main-graph node output."""
    import numpy as np, onnxruntime as ort
    m = onnx.load(path)
    declared = {o.name for o in m.graph.output}
    for n in m.graph.node:
        for o in n.output:
            if o and o not in declared:
                m.graph.output.append(onnx.ValueInfoProto(name=o))
                declared.add(o)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = dict(np.load(inputs_npz))
    names = [o.name for o in sess.get_outputs()]
    outs = sess.run(names, feeds)
    return {n: list(np.asarray(v).shape) for n, v in zip(names, outs)}


def manifest():
    p = os.path.join(CACHE, "inputs", "manifest.tsv")
    if not os.path.exists(p):
        return {}
    rows = [l.rstrip("\n").split("\t") for l in open(p) if l.strip()]
    return {r[1]: os.path.join(CACHE, "inputs", r[2]) for r in rows if len(r) >= 3}


def main():
    result = {}
    inputs = manifest()
    for path in sorted(glob.glob(os.path.join(MODELS, "*", "*.onnx"))):
        rel = os.path.relpath(path, MODELS)
        m = onnx.load(path)
        strip(m.graph)
        entry = {"strict": True, "error": None, "values": {}}
        try:
            inferred = shape_inference.infer_shapes(m, strict_mode=True, data_prop=True)
        except Exception as e:  # strict mode refuses some real models; keep what lenient mode finds
            entry["strict"] = False
            entry["error"] = str(e)[:500]
            inferred = shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
        collect(inferred.graph, entry["values"])
        if rel in inputs:
            try:
                entry["actual"] = actual_shapes(path, inputs[rel])
            except Exception as e:
                print(f"{rel}: onnxruntime run failed: {str(e)[:200]}")
        result[rel] = entry
        print(f"{rel}: {len(entry['values'])} values, strict={entry['strict']}"
              + f", {len(entry.get('actual', {}))} actual"
              + (f" ({entry['error'][:120]})" if entry["error"] else ""))
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"onnx_version": onnx.__version__, "models": result}, f, indent=1)
    print(OUT)


if __name__ == "__main__":
    main()
