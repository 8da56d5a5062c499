#!/usr/bin/env python3
"""Dynamic int8 LSTMs: float vs Quench dynamic vs ONNX Runtime dynamic.

1. examples/mnist/lstm_rows.onnx (an LSTM reading MNIST digits row by row,
   scripts/dynamic/train_lstm_mnist.py): top-1 on examples/mnist/test.npz
   (1,000 images), agreement with float, LSTM+Linear weight bytes.
2. silero VAD (silero_vad_16k_sequence.onnx, the variant whose LSTM is a
   top-level node): speech probabilities and final LSTM state over every
   576-sample frame of a few signals (speech-like audio as
   scripts/make_real_inputs.py makes it, a plucked string from CPython's test
   data, noise, silence); max |diff| vs float.

Every quantized model runs in ONNX Runtime; with --quench-run in `quench run`
too (DynamicQuantizeLSTM is a com.microsoft op both implement).

Usage:
  python scripts/dynamic/lstm_accuracy.py [--quench target/release/quench] [--quench-run] [--json out.json]
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("QUENCH_CACHE", Path.home() / ".cache/quench"))


def ort_run(model, feeds):
    s = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def quench_run(quench, model, feeds):
    with tempfile.TemporaryDirectory() as d:
        np.savez(Path(d) / "in.npz", **feeds)
        subprocess.run(
            [quench, "run", str(model), "--inputs", f"{d}/in.npz", "-o", d, "--threads", "1"],
            check=True,
            capture_output=True,
        )
        names = [o.name for o in onnx.load(str(model), load_external_data=False).graph.output]
        return [np.load(Path(d) / f"{n}.npy") for n in names]


def weight_bytes(model, ops=("LSTM", "DynamicQuantizeLSTM", "Gemm", "MatMul", "DynamicQuantizeMatMul", "MatMulInteger")):
    """Bytes of the initializers the LSTM / Linear nodes read (weights, scales, zero points)."""
    m = onnx.load(str(model))
    inits = {i.name: i for i in m.graph.initializer}
    names = {x for n in m.graph.node if n.op_type in ops for x in n.input if x in inits}
    # Biases stay float in both quantizers; count only matrices and their parameters.
    total = 0
    for n in names:
        arr = onnx.numpy_helper.to_array(inits[n])
        if arr.ndim >= 2 or "scale" in n or "zero_point" in n:
            total += arr.nbytes
    return total


def make_models(quench, float_model, work: Path):
    models = {}
    for name, flags in [("quench-per-channel", []), ("quench-per-tensor", ["--per-tensor"])]:
        out = work / f"{Path(float_model).stem}-{name}.onnx"
        subprocess.run(
            [quench, "quantize", str(float_model), "-o", str(out), "--mode", "dynamic", *flags],
            check=True,
            capture_output=True,
        )
        models[name] = out
    for name, pc in [("ort-per-tensor", False), ("ort-per-channel", True)]:
        out = work / f"{Path(float_model).stem}-{name}.onnx"
        quantize_dynamic(str(float_model), str(out), per_channel=pc, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["LSTM", "MatMul", "Gemm"])
        models[name] = out
    return models


def mnist(args, work):
    model = ROOT / "examples/mnist/lstm_rows.onnx"
    d = np.load(ROOT / "examples/mnist/test.npz")
    x, y = d["input"].reshape(-1, 28, 28), d["label"]
    ref = ort_run(model, {"input": x})[0]
    rows = {"float [ort]": {"top1": float((ref.argmax(1) == y).mean()), "weight_bytes": weight_bytes(model)}}
    if args.quench_run:
        q = quench_run(args.quench, model, {"input": x})[0]
        rows["float [quench]"] = {"top1": float((q.argmax(1) == y).mean()), "max_abs_vs_float": float(np.abs(q - ref).max())}
    for name, path in make_models(args.quench, model, work).items():
        runs = [("ort", lambda p=path: ort_run(p, {"input": x})[0])]
        if args.quench_run:
            runs.append(("quench", lambda p=path: quench_run(args.quench, p, {"input": x})[0]))
        for rt, f in runs:
            try:
                o = f()
            except Exception as e:  # noqa: BLE001
                rows[f"{name} [{rt}]"] = {"error": str(e)[:200]}
                continue
            rows[f"{name} [{rt}]"] = {
                "top1": float((o.argmax(1) == y).mean()),
                "agree_float": float((o.argmax(1) == ref.argmax(1)).mean()),
                "max_abs_logit_diff": float(np.abs(o - ref).max()),
                "weight_bytes": weight_bytes(path),
                "out": o,
            }
    for name in list(rows):
        if name.endswith("[quench]") and "out" in rows[name]:
            o = rows.get(name.replace("[quench]", "[ort]"), {}).get("out")
            if o is not None:
                rows[name]["max_abs_vs_ort_run"] = float(np.abs(o - rows[name]["out"]).max())
    for r in rows.values():
        r.pop("out", None)
    return rows


def speech_like(sr=16000, secs=1.5, seed=0):
    """Voiced-speech-like audio, as scripts/make_real_inputs.py makes it (no speech recordings ship here)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * secs)) / sr
    f0 = 130 + 25 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    f1, f2 = 600 + 250 * np.sin(2 * np.pi * 3.1 * t), 1500 + 500 * np.sin(2 * np.pi * 2.3 * t + 1)
    x = np.zeros_like(t)
    for k in range(1, 30):
        fk = k * f0
        amp = np.exp(-((fk - f1) / 200) ** 2) + 0.6 * np.exp(-((fk - f2) / 300) ** 2) + 0.05
        x += amp / k**0.5 * np.sin(k * phase)
    env = np.clip(np.sin(2 * np.pi * 4 * t) * 1.5, 0, 1) ** 0.5 * (t > 0.1)
    x = 0.3 * env * x / np.abs(x).max() + 0.003 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def signals():
    out = {f"speech-seed{s}": speech_like(secs=3.0, seed=s) for s in range(3)}
    pluck = sorted(glob.glob("/root/.pyenv/versions/*/lib/python*/test/audiodata/pluck-pcm16.wav")) or sorted(
        glob.glob("/usr/lib/python3*/test/audiodata/pluck-pcm16.wav"))
    if pluck:
        with wave.open(pluck[0]) as w:
            a = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
            a = a.reshape(-1, w.getnchannels()).mean(1)
            sr = w.getframerate()
        idx = np.arange(0, len(a) - 1, sr / 16000)
        out["pluck"] = np.interp(idx, np.arange(len(a)), a).astype(np.float32)
    rng = np.random.default_rng(0)
    out["noise"] = (0.05 * rng.standard_normal(48000)).astype(np.float32)
    out["silence"] = np.zeros(16000, np.float32)
    return out


def frames(audio, n=512, ctx=64):
    f = []
    for i in range(len(audio) // n):
        prev = audio[i * n - ctx : i * n] if i else np.zeros(ctx, np.float32)
        f.append(np.concatenate([prev, audio[i * n : (i + 1) * n]]))
    return np.stack(f).astype(np.float32)


def silero(args, work):
    model = CACHE / "models/silero_vad/silero_vad_16k_sequence.onnx"
    feeds = {
        name: {"input": frames(a), "h": np.zeros((1, 1, 128), np.float32), "c": np.zeros((1, 1, 128), np.float32)}
        for name, a in signals().items()
    }
    ref = {k: ort_run(model, f) for k, f in feeds.items()}
    rows = {"float": {"weight_bytes": weight_bytes(model), "frames": int(sum(len(f["input"]) for f in feeds.values()))}}
    for name, path in make_models(args.quench, model, work).items():
        runs = [("ort", lambda f, p=path: ort_run(p, f))]
        if args.quench_run:
            runs.append(("quench", lambda f, p=path: quench_run(args.quench, p, f)))
        for rt, run in runs:
            prob, state, flips = 0.0, 0.0, 0
            try:
                for k, f in feeds.items():
                    o = run(f)
                    prob = max(prob, float(np.abs(o[0] - ref[k][0]).max()))
                    state = max(state, float(max(np.abs(a - b).max() for a, b in zip(o[1:], ref[k][1:]))))
                    flips += int(((o[0] > 0.5) != (ref[k][0] > 0.5)).sum())
            except Exception as e:  # noqa: BLE001
                rows[f"{name} [{rt}]"] = {"error": str(e)[:200]}
                continue
            rows[f"{name} [{rt}]"] = {
                "max_abs_prob_diff": prob,
                "max_abs_state_diff": state,
                "decisions_flipped_at_0.5": flips,
                "weight_bytes": weight_bytes(path),
            }
    return rows


def show(title, rows, keys):
    print(f"\n{title}")
    print(f"{'model [runtime]':<32}" + "".join(f"{k:>26}" for k in keys))
    for name, r in rows.items():
        if "error" in r:
            print(f"{name:<32} ERROR {r['error']}")
            continue
        cells = []
        for k in keys:
            v = r.get(k, "")
            cells.append(f"{v:>26.5f}" if isinstance(v, float) else f"{v!s:>26}")
        print(f"{name:<32}" + "".join(cells))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quench", default="target/release/quench")
    ap.add_argument("--quench-run", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lstm-dyn-"))
    m = mnist(args, work)
    show("MNIST row-LSTM (1,000 test images)", m,
         ["top1", "agree_float", "max_abs_logit_diff", "weight_bytes", "max_abs_vs_ort_run"])
    s = silero(args, work)
    show("silero VAD 16k sequence (LSTM)", s,
         ["max_abs_prob_diff", "max_abs_state_diff", "decisions_flipped_at_0.5", "weight_bytes", "frames"])
    if args.json:
        Path(args.json).write_text(json.dumps({"mnist": m, "silero": s}, indent=1))


if __name__ == "__main__":
    main()
