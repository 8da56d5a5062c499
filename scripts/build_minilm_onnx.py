"""Build sentence-transformers/all-MiniLM-L6-v2 as an ONNX graph (BERT encoder + masked mean pooling + L2 norm)
from its model.safetensors, with onnx.helper (no torch).
Usage: python build_minilm_onnx.py MODEL_DIR OUT.onnx [opset]   (needs numpy, onnx, safetensors)
Inputs: input_ids, attention_mask, token_type_ids (int64 [batch, seq]); outputs: last_hidden_state, sentence_embedding."""
import sys, json, numpy as np, onnx
from onnx import helper as h, TensorProto as TP, numpy_helper as nh
from safetensors.numpy import load_file
D, OUT = sys.argv[1], sys.argv[2]; OPSET = int(sys.argv[3]) if len(sys.argv) > 3 else 17
cfg = json.load(open(f"{D}/config.json")); W = load_file(f"{D}/model.safetensors")
H, NH, L, EPS = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"], cfg["layer_norm_eps"]; HD = H // NH
nodes, inits, seen = [], [], set()
def init(name, arr):
    if name not in seen: seen.add(name); inits.append(nh.from_array(np.ascontiguousarray(arr), name))
    return name
def n(op, ins, outs=None, **kw):
    outs = outs or [f"{op}_{len(nodes)}"]; nodes.append(h.make_node(op, ins, outs, name=f"n{len(nodes)}_{op}", **kw)); return outs[0]
def linear(x, p): return n("Add", [n("MatMul", [x, init(p + ".weight_T", W[p + ".weight"].T)]), init(p + ".bias", W[p + ".bias"])])
def ln(x, p): return n("LayerNormalization", [x, init(p + ".weight", W[p + ".weight"]), init(p + ".bias", W[p + ".bias"])], axis=-1, epsilon=EPS)
def gelu(x): return n("Mul", [n("Mul", [x, n("Add", [n("Erf", [n("Div", [x, init("sqrt2", np.array(np.sqrt(2), np.float32))])]), init("one", np.array(1, np.float32))])]), init("half", np.array(.5, np.float32))])
ids, tt, am = "input_ids", "token_type_ids", "attention_mask"
seq = n("Gather", [n("Shape", [ids]), init("i1", np.array(1, np.int64))])
pos = n("Unsqueeze", [n("Range", [init("i0", np.array(0, np.int64)), seq, init("i1b", np.array(1, np.int64))]), init("ax0", np.array([0], np.int64))])
e = n("Add", [n("Add", [n("Gather", [init("word_emb", W["embeddings.word_embeddings.weight"]), ids]),
                        n("Gather", [init("type_emb", W["embeddings.token_type_embeddings.weight"]), tt])]),
              n("Gather", [init("pos_emb", W["embeddings.position_embeddings.weight"]), pos])])
x = ln(e, "embeddings.LayerNorm")
amf = n("Cast", [am], to=TP.FLOAT)
bias = n("Mul", [n("Sub", [init("onef", np.array(1, np.float32)), n("Unsqueeze", [amf, init("ax12", np.array([1, 2], np.int64))])]), init("neg", np.array(-1e4, np.float32))])
shp_split = init("shp_split", np.array([0, 0, NH, HD], np.int64)); shp_merge = init("shp_merge", np.array([0, 0, H], np.int64))
scale = init("scale", np.array(1 / np.sqrt(HD), np.float32))
for i in range(L):
    p = f"encoder.layer.{i}."
    heads = lambda t, perm: n("Transpose", [n("Reshape", [t, shp_split])], perm=perm)
    q = heads(linear(x, p + "attention.self.query"), [0, 2, 1, 3])
    k = heads(linear(x, p + "attention.self.key"), [0, 2, 3, 1])
    v = heads(linear(x, p + "attention.self.value"), [0, 2, 1, 3])
    s = n("Add", [n("Mul", [n("MatMul", [q, k]), scale]), bias])
    ctx = n("Reshape", [n("Transpose", [n("MatMul", [n("Softmax", [s], axis=-1), v])], perm=[0, 2, 1, 3]), shp_merge])
    x = ln(n("Add", [linear(ctx, p + "attention.output.dense"), x]), p + "attention.output.LayerNorm")
    f = linear(gelu(linear(x, p + "intermediate.dense")), p + "output.dense")
    x = ln(n("Add", [f, x]), p + "output.LayerNorm")
n("Identity", [x], ["last_hidden_state"])
m3 = n("Unsqueeze", [amf, init("ax2", np.array([2], np.int64))])
summed = n("ReduceSum", [n("Mul", [x, m3]), init("ax1", np.array([1], np.int64))], keepdims=0)
cnt = n("Max", [n("ReduceSum", [amf, init("ax1b", np.array([1], np.int64))], keepdims=1), init("eps9", np.array(1e-9, np.float32))])
mean = n("Div", [summed, cnt])
l2 = n("ReduceL2", [mean, init("axm1", np.array([-1], np.int64))], keepdims=1) if OPSET >= 18 else n("ReduceL2", [mean], axes=[-1], keepdims=1)
n("Div", [mean, n("Max", [l2, init("eps12", np.array(1e-12, np.float32))])], ["sentence_embedding"])
g = h.make_graph(nodes, "all-MiniLM-L6-v2",
    [h.make_tensor_value_info(ids, TP.INT64, ["batch", "seq"]), h.make_tensor_value_info(am, TP.INT64, ["batch", "seq"]), h.make_tensor_value_info(tt, TP.INT64, ["batch", "seq"])],
    [h.make_tensor_value_info("last_hidden_state", TP.FLOAT, ["batch", "seq", H]), h.make_tensor_value_info("sentence_embedding", TP.FLOAT, ["batch", H])], inits)
m = h.make_model(g, opset_imports=[h.make_opsetid("", OPSET)], producer_name="build_minilm_onnx.py"); m.ir_version = 8
onnx.checker.check_model(m, full_check=True); onnx.save(m, OUT); print("saved", OUT, len(nodes), "nodes")
