"""Write the ONNX backend node test cases into OUTDIR/<case>/{model.onnx,test_data_set_N/{input,output}_K.pb}.

Recent `onnx` wheels ship the case generators (onnx/backend/test/case/node/*.py) but not the generated
data/node folder; this runs onnx's own writer over the node cases. Cases are stamped with the newest
IR/opset the installed `onnx` knows. Random inputs are seeded, so reruns give identical files.
Usage: python gen_onnx_node_tests.py OUTDIR   (adapted from onnx.backend.test.cmd_tools.generate_data)
"""
import argparse, collections, os, shutil, sys, tempfile
import numpy as np
import onnx
import onnx.backend.test.cmd_tools as cmd_tools
import onnx.backend.test.case.node as node

out = os.path.abspath(sys.argv[1])
np.random.seed(0)
cases = node.collect_testcases()
print(f"onnx {onnx.__version__}: {len(cases)} node cases", dict(collections.Counter(c.kind for c in cases)), file=sys.stderr)
cmd_tools.model_test.collect_testcases = lambda: cases
os.makedirs(os.path.dirname(out), exist_ok=True)
tmp = tempfile.mkdtemp(prefix=".gen-", dir=os.path.dirname(out))
cmd_tools.generate_data(argparse.Namespace(output=tmp))
shutil.rmtree(out, ignore_errors=True)
os.rename(os.path.join(tmp, "node"), out)
shutil.rmtree(tmp)
print(f"wrote {len(os.listdir(out))} cases to {out}", file=sys.stderr)
