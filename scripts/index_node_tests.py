"""Index ONNX node test cases by op: python index_node_tests.py CASES_DIR [OUT.txt]  (default OUT: stdout summary only)
Writes one case dir per line grouped by op (plain: graph uses only that op; '+': multi-op graph containing it)."""
import os, re, sys, onnx, collections
D = sys.argv[1]
OPS = "Conv ConvTranspose BatchNormalization Relu LeakyRelu PRelu Clip Sigmoid Tanh HardSigmoid HardSwish Erf Gelu Add Sub Mul Div Pow Sqrt Exp Log Neg Abs Max Min MatMul Gemm GlobalAveragePool GlobalMaxPool MaxPool AveragePool Softmax LogSoftmax LayerNormalization ReduceMean ReduceSum ReduceMax ReduceL2 Reshape Transpose Concat Flatten Split Slice Gather Squeeze Unsqueeze Shape Range Expand Where Equal Less Greater Not Cast Constant ConstantOfShape Pad Resize Identity Dropout LSTM GRU If QuantizeLinear DequantizeLinear DynamicQuantizeLinear QLinearConv QLinearMatMul MatMulInteger ConvInteger".split()
direct, composite, dts = collections.defaultdict(list), collections.defaultdict(list), {}
for c in sorted(x for x in os.listdir(D) if x.startswith("test_")):
    g = onnx.load(os.path.join(D, c, "model.onnx")).graph
    dts[c] = sorted({onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower()
                     for v in list(g.input) + list(g.output) if v.type.HasField("tensor_type")})
    ops = {n.op_type for n in g.node}
    for op in ops: (direct if len(ops) == 1 else composite)[op].append(c)
SPECIAL = re.compile(r"float16|bfloat16|string|float8|e4m3|e5m2|float4|int4|uint4|double|float64|complex")
with open(sys.argv[2] if len(sys.argv) > 2 else os.devnull, "w") as f:
    f.write(f"# ONNX node test cases in {D}, grouped by op.\n"
            "# Plain lines: cases whose top-level graph uses only that op. '+' lines: multi-op graphs containing it\n"
            "# (mostly *_expanded function bodies). [..] = graph I/O element types when not just float.\n")
    for op in OPS:
        f.write(f"\n## {op}: {len(direct[op])} direct, {len(composite[op])} composite\n")
        for mark, lst in (("", direct[op]), ("+ ", composite[op])):
            for c in lst: f.write(f"{mark}{c}{'' if dts[c] == ['float'] else ' [' + ','.join(dts[c]) + ']'}\n")
for op in OPS:
    sp = [c for c in direct[op] if SPECIAL.search(",".join(dts[c]))]
    print(f"{op}: {len(direct[op])} direct, {len(composite[op])} composite" + (f"; non-f32 float/string I/O: {' '.join(c.removeprefix('test_') for c in sp)}" if sp else ""))
