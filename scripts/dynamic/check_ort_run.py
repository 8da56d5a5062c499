#!/usr/bin/env python3
"""Runs MODEL in ONNX Runtime on INPUTS.npz and compares with Quench's outputs in OUTDIR/NAME.npy.

Usage: check_ort_run.py MODEL INPUTS.npz OUTDIR [--atol A] [--rtol R]
Exit 1 (printing the worst element) when any output differs by more than atol + rtol * max|ort|.
Used by crates/quench/tests/dynamic_cli.rs: ORT must load the dynamic models Quench writes,
and both runtimes must compute the same numbers. On x86 without VNNI the s8 weights are
handed to ORT as u8 + 128 (scripts/ort_exact.py).
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ort_exact import for_ort  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("inputs")
ap.add_argument("outdir")
ap.add_argument("--atol", type=float, default=1e-4)
ap.add_argument("--rtol", type=float, default=1e-4)
a = ap.parse_args()

s = ort.InferenceSession(for_ort(a.model), providers=["CPUExecutionProvider"])
feeds = dict(np.load(a.inputs))
bad = False
for o, got in zip(s.get_outputs(), s.run(None, feeds)):
    mine = np.load(Path(a.outdir) / f"{o.name}.npy")
    d = np.abs(mine.astype(np.float64) - got).max() if got.size else 0.0
    tol = a.atol + a.rtol * (np.abs(got).max() if got.size else 0.0)
    print(f"{o.name}: max |quench - ort| = {d:.3g} (tolerance {tol:.3g})")
    bad |= not d <= tol or mine.shape != got.shape
sys.exit(1 if bad else 0)
