"""List each model under MODELS_DIR: size, IR/opsets, onnxruntime inputs/outputs, op histogram (subgraphs included).
Usage: python inspect_models.py [MODELS_DIR]"""
import glob, os, sys, collections, onnx, onnxruntime as ort
ort.set_default_logger_severity(3)
M = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.environ.get("QUENCH_CACHE", os.path.expanduser("~/.cache/quench")), "models")
def ops(g, c):
    for n in g.node:
        c[(n.domain or "ai.onnx") + ":" + n.op_type if n.domain else n.op_type] += 1
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH: ops(a.g, c)
            for sg in a.graphs: ops(sg, c)
for f in sorted(glob.glob(M + "/*/*.onnx")):
    m = onnx.load(f)
    print(f"== {os.path.relpath(f, M)}  {os.path.getsize(f)} bytes  ir={m.ir_version} opset={[(o.domain or 'ai.onnx', o.version) for o in m.opset_import]} producer={m.producer_name} {m.producer_version}")
    try:
        s = ort.InferenceSession(f, providers=["CPUExecutionProvider"])
        for i in s.get_inputs(): print(f"  in  {i.name} {i.shape} {i.type}")
        for o in s.get_outputs(): print(f"  out {o.name} {o.shape} {o.type}")
    except Exception as e: print("  ORT FAILED:", str(e)[:300])
    c = collections.Counter(); ops(m.graph, c)
    print(f"  nodes={sum(c.values())} inits={len(m.graph.initializer)} ops:", " ".join(f"{k}:{v}" for k, v in sorted(c.items(), key=lambda kv: -kv[1])))
